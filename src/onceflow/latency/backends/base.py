"""The backend protocol: ``available() -> (ok, reason)`` and ``measure(model, shape, protocol)``.

Every backend compiles a model into a :class:`~onceflow.latency.protocol.Timed` item via
``prepare``; ``measure`` is ``prepare`` + the shared protocol, so the LUT builder (which times
many items interleaved) and a one-off measurement time things identically.
"""

from __future__ import annotations

import contextlib
import os
import platform
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
from torch import nn

from onceflow.config import LatencyTarget
from onceflow.errors import BackendUnavailable
from onceflow.latency.protocol import (
    LatencyStats,
    MeasureProtocol,
    Timed,
    sample_interleaved_clocks,
    unstable,
)
from onceflow.progress import track


def cpu_name() -> str:
    """The CPU model string (Linux /proc/cpuinfo), else platform.processor()."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def cpu_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
    """Pin this process to ``cpus`` for the duration (Linux); no-op when None or unsupported."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


class Backend(ABC):
    """A runtime that can time models for one :class:`LatencyTarget`."""

    name: str = "?"

    def __init__(self, target: LatencyTarget, calibration_images: np.ndarray | None = None):
        # calibration_images: normalized float32 NCHW images, used only by int8 builds.
        self.target = target
        self.calibration_images = calibration_images
        self.noise: dict = {}  # the last timing pass: how many models were unstable, retimed

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") when this backend can run the target here, else (False, why)."""

    @abstractmethod
    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> Timed:
        """Compile ``model`` for a fixed NCHW ``input_shape`` into a timed item."""

    @abstractmethod
    def environment(self) -> dict:
        """Device and library versions, recorded in every table this backend builds."""

    def require(self, target_name: str = "") -> None:
        """Raise BackendUnavailable (with the reason) unless ``available()``."""
        ok, reason = self.available()
        if not ok:
            who = f"latency target {target_name!r} " if target_name else ""
            raise BackendUnavailable(f"{who}(backend {self.name}) cannot run here: {reason}")

    def prepare_sessions(self, model: nn.Module, input_shape: Sequence[int], k: int) -> list[Timed]:
        """``k`` independent compilations of one model (backends override to share export)."""
        return [self.prepare(model, input_shape) for _ in range(k)]

    def sample_many(
        self, models: Sequence[tuple[nn.Module, Sequence[int]]], protocol: MeasureProtocol
    ) -> tuple[np.ndarray, np.ndarray]:
        """Raw (n_models, repeats) ms samples on the item clock and on thread CPU time.

        Each model gets ``protocol.sessions`` compilations; all of them are timed interleaved,
        ``ceil(repeats / sessions)`` samples each, and a model's samples are pooled.
        """
        k = protocol.sessions
        return self.sample_sessions(
            [
                it
                for m, s in track(models, "latency sessions", unit="models")
                for it in self.prepare_sessions(m, s, k)
            ],
            protocol,
        )

    def sample_sessions(
        self, items: Sequence[Timed], protocol: MeasureProtocol
    ) -> tuple[np.ndarray, np.ndarray]:
        """Time prepared items, ``protocol.sessions`` consecutive ones per model, interleaved;
        closes them. Returns pooled (n_models, sessions * ceil(repeats / sessions)) ms samples
        on the item clock and on thread CPU time."""
        k = protocol.sessions
        if len(items) % k:
            raise ValueError(f"{len(items)} timed items is not a multiple of {k} sessions")
        per = -(-protocol.repeats // k)
        n = len(items) // k
        try:
            with cpu_affinity(self.target.options.cpu_affinity):
                wall, cpu = sample_interleaved_clocks(items, replace(protocol, repeats=per))
                self._retime_unstable(items, wall, cpu, replace(protocol, repeats=per), n)
        finally:
            for it in items:
                it.close()
        return wall.reshape(n, k * per), cpu.reshape(n, k * per)

    def _retime_unstable(
        self,
        items: Sequence[Timed],
        wall: np.ndarray,
        cpu: np.ndarray,
        protocol: MeasureProtocol,
        n: int,
    ) -> None:
        """Time again, interleaved among themselves, the models whose samples were bimodal or
        drifted (the machine changed speed while they were timed), and replace their samples
        in place (rows of ``wall`` / ``cpu``: item order, sessions consecutive). What was found
        is kept in ``self.noise`` for the table's record."""
        k = protocol.sessions
        chosen = cpu if protocol.clock == "thread_cpu" else wall
        # one time series per model: the median over its sessions, round by round
        series = np.median(chosen.reshape(n, k, -1), axis=1)
        bad = [j for j in range(n) if unstable(series[j])]
        still = 0
        if bad:
            rows = [j * k + i for j in bad for i in range(k)]
            again = replace(protocol, warmup=0, seed=protocol.seed + 1)
            w2, c2 = sample_interleaved_clocks([items[r] for r in rows], again)
            wall[rows], cpu[rows] = w2, c2
            redo = (c2 if protocol.clock == "thread_cpu" else w2).reshape(len(bad), k, -1)
            still = sum(unstable(np.median(r, axis=0)) for r in redo)
        self.noise = {
            "models": n,
            "unstable": len(bad),
            "retimed": len(bad),
            "still_unstable_after_retime": int(still),
        }

    def measure_many(
        self, models: Sequence[tuple[nn.Module, Sequence[int]]], protocol: MeasureProtocol
    ) -> list[LatencyStats]:
        """Prepare every model, then time them all interleaved under one protocol."""
        wall, cpu = self.sample_many(models, protocol)
        chosen = cpu if protocol.clock == "thread_cpu" else wall
        return [LatencyStats.from_samples(row) for row in chosen]

    def measure(
        self, model: nn.Module, input_shape: Sequence[int], protocol: MeasureProtocol
    ) -> LatencyStats:
        """Latency of one model (ms per inference of a batch of ``input_shape``)."""
        return self.measure_many([(model, input_shape)], protocol)[0]
