"""The measurement protocol every backend shares: warm-up, interleaved timed rounds, robust stats.

A backend turns a model into :class:`Timed` items (compiled sessions, engines or modules bound
to a fixed input) whose ``time(n)`` runs ``n`` consecutive inferences and returns the elapsed
seconds. :func:`sample_interleaved_clocks` times many items the same way: after warm-up it runs
``repeats`` rounds, and in each round every item (in a fresh random order) gives one sample of
``number`` back-to-back runs. Interleaving spreads slow drifts of the machine (other processes,
clocks, caches) evenly over all items, so ratios between items stay trustworthy even when
absolute times wobble. But cycling over hundreds of items also evicts each item's weights from
the CPU caches between its samples, and a cold sample of a small model takes ~2x its warm
latency; ``prime`` untimed runs right before every sample make it time the warm steady state a
deployed model (and the package stage, which times a model alone) runs in. Each sample is read
on two clocks: the item's own (wall time, or CUDA events) and the measuring thread's CPU time,
which for single-threaded CPU inference equals its latency but excludes time slices other
processes take. Stats use the median.
The LUT builder and the end-to-end validation use this one function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from onceflow.config import MeasureProtocolConfig
from onceflow.progress import Progress

# (p90 - p10) of a normal distribution, in standard deviations: turns the 10-90 spread into a
# robust sigma that a few preempted samples on a shared machine do not inflate.
_P10_P90_SIGMAS = 2.0 * 1.2815515655446004


@dataclass(frozen=True)
class MeasureProtocol:
    """How to time one item; identical for LUT entries and whole subnets. Built from the
    validated ``latency.protocol`` section (:meth:`from_config`), which holds the defaults and
    the meaning of each field; this adds the seed and resolves ``clock: auto``."""

    warmup: int  # untimed runs per item before the first round
    repeats: int  # timed samples per item (split over sessions)
    number: int  # consecutive runs per sample (the sample is their mean)
    interleave: bool  # rounds go over all items in shuffled order; else item by item
    prime: int  # untimed runs right before each sample (warm steady state)
    sessions: int  # independent compilations per model; samples split over them and pooled
    seed: int  # seeds the per-round shuffling
    # "wall": the item's own clock (wall time on CPU, CUDA events on GPU). "thread_cpu": CPU
    # time of the measuring thread -- equal to wall latency for single-threaded CPU inference
    # on an idle machine, but blind to time slices taken by other processes on a shared one.
    clock: str

    @classmethod
    def from_config(cls, cfg: MeasureProtocolConfig, *, seed: int, clock: str) -> MeasureProtocol:
        """``cfg``'s settings with ``seed`` and a resolved ``clock`` (wall or thread_cpu)."""
        return cls(**cfg.model_dump(exclude={"clock"}), seed=seed, clock=clock)

    def __post_init__(self) -> None:
        if min(self.repeats, self.number, self.sessions) < 1 or min(self.warmup, self.prime) < 0:
            raise ValueError(
                f"bad measurement protocol {self}: "
                "need repeats, number, sessions >= 1 and warmup, prime >= 0"
            )
        if self.clock not in ("wall", "thread_cpu"):
            raise ValueError(f"protocol clock must be wall or thread_cpu, got {self.clock!r}")

    def to_json(self) -> dict:
        return asdict(self)


# Two-speed detection (a CPU that switches clocks for minutes at a time gives a sample set with
# two modes): the slower mode must be this much slower than the faster one...
BIMODAL_RATIO = 1.12
# ...hold at least this share of the samples (fewer are preemption outliers the median ignores)...
BIMODAL_MIN_SHARE = 0.15
# ...and the modes must be this many pooled standard deviations apart.
BIMODAL_SEPARATION = 3.0
# ...with at most this share of the samples in the middle third between the two modes' medians.
BIMODAL_MAX_VALLEY = 0.05
# A drift: the medians of the first and the second half of the samples (in time) differ by more.
DRIFT_REL = 0.08


def split_modes(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(fast, slow) samples when ``samples`` are bimodal (see the constants above), else None.
    The split is the one that maximizes the between-group variance of log latency (Otsu)."""
    s = np.sort(np.asarray(samples, dtype=np.float64))
    n = s.size
    lo = max(2, int(np.ceil(BIMODAL_MIN_SHARE * n)))
    if n < 10 or s[0] <= 0 or n - lo <= lo:
        return None
    x = np.log(s)
    c = np.cumsum(x)
    k = np.arange(lo, n - lo + 1)
    m1, m2 = c[k - 1] / k, (c[-1] - c[k - 1]) / (n - k)
    best = int(k[np.argmax(k * (n - k) * (m2 - m1) ** 2)])
    fast, slow = s[:best], s[best:]
    spread = np.sqrt((x[:best].var() * best + x[best:].var() * (n - best)) / n) + 1e-12
    sep = (np.log(slow).mean() - np.log(fast).mean()) / spread
    a, b = np.median(fast), np.median(slow)
    if b / a < BIMODAL_RATIO or sep < BIMODAL_SEPARATION:
        return None
    # a valley between the modes: few samples in the middle third between the two medians
    # (a wide single mode, e.g. uniform noise, fills it)
    lo3, hi3 = a + (b - a) / 3, b - (b - a) / 3
    if np.mean((s > lo3) & (s < hi3)) > BIMODAL_MAX_VALLEY:
        return None
    return fast, slow


def drift(samples_in_time_order: np.ndarray) -> float:
    """Relative difference between the medians of the first and the second half in time."""
    s = np.asarray(samples_in_time_order, dtype=np.float64)
    if s.size < 4:
        return 0.0
    a, b = np.median(s[: s.size // 2]), np.median(s[s.size // 2 :])
    return float(abs(a - b) / min(a, b)) if min(a, b) > 0 else 0.0


def robust_latency(samples: np.ndarray) -> float:
    """The one latency figure of a sample set: its median, or the faster mode's median when the
    machine switched between two speeds while it was timed (noise only ever adds time)."""
    modes = split_modes(samples)
    return float(np.median(modes[0] if modes is not None else samples))


def unstable(samples_in_time_order: np.ndarray) -> bool:
    """Bimodal or drifting samples: worth timing again (interleaved with the other such items)."""
    return split_modes(samples_in_time_order) is not None or (
        drift(samples_in_time_order) > DRIFT_REL
    )


@dataclass(frozen=True)
class LatencyStats:
    """Per-inference latency of one item in milliseconds, over ``n`` samples. ``median`` is the
    latency every consumer reads (tables, calibration subnets, packages): the samples' median,
    or the faster mode's when they are bimodal (``bimodal``; :func:`robust_latency`)."""

    median: float
    p10: float
    p90: float
    std: float
    n: int
    bimodal: bool = False

    @property
    def cv(self) -> float:
        """Robust coefficient of variation: (p90 - p10) as a sigma, relative to the median."""
        return (
            (self.p90 - self.p10) / _P10_P90_SIGMAS / self.median if self.median > 0 else math.nan
        )

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        s = np.asarray(samples_ms, dtype=np.float64)
        if s.size == 0:
            raise ValueError("no latency samples")
        p10, p90 = np.percentile(s, [10, 90])
        modes = split_modes(s)
        med = np.median(modes[0] if modes is not None else s)
        return cls(
            median=float(med),
            p10=float(p10),
            p90=float(p90),
            std=float(s.std()),
            n=int(s.size),
            bimodal=modes is not None,
        )

    def to_json(self) -> dict:
        return {
            "median": self.median,
            "p10": self.p10,
            "p90": self.p90,
            "std": self.std,
            "n": self.n,
            "bimodal": self.bimodal,
        }

    @classmethod
    def from_json(cls, d: dict) -> LatencyStats:
        return cls(
            float(d["median"]),
            float(d["p10"]),
            float(d["p90"]),
            float(d["std"]),
            int(d["n"]),
            bool(d.get("bimodal", False)),
        )


class Timed(Protocol):
    """One prepared item: ``time(n)`` runs n inferences back to back, returns elapsed seconds."""

    def time(self, n: int) -> float: ...

    def close(self) -> None: ...


def sample_interleaved_clocks(
    items: Sequence[Timed], protocol: MeasureProtocol
) -> tuple[np.ndarray, np.ndarray]:
    """Raw samples on both clocks: (item clock, this thread's CPU time), each (n_items, repeats),
    per-inference ms in item order. The item clock is wall time (CPU backends) or device time."""
    shape = (len(items), protocol.repeats)
    wall, cpu = np.empty(shape, dtype=np.float64), np.empty(shape, dtype=np.float64)
    for it in items:
        if protocol.warmup:
            it.time(protocol.warmup)
    rng = np.random.default_rng(protocol.seed)
    thread_time = time.thread_time

    def one(i: int, r: int) -> None:
        if protocol.prime:
            items[i].time(protocol.prime)  # untimed: the sample starts with warm caches
        c0 = thread_time()
        wall[i, r] = items[i].time(protocol.number)
        cpu[i, r] = thread_time() - c0

    desc = f"latency timing of {len(items)} entries"
    bar = Progress(len(items) * protocol.repeats, desc, unit="samples")
    with bar:
        if protocol.interleave:
            for r in range(protocol.repeats):
                for i in rng.permutation(len(items)):
                    one(int(i), r)
                    bar.update()
        else:
            for i in range(len(items)):
                for r in range(protocol.repeats):
                    one(i, r)
                    bar.update()
    scale = 1e3 / protocol.number
    return wall * scale, cpu * scale


def sample_interleaved(items: Sequence[Timed], protocol: MeasureProtocol) -> np.ndarray:
    """Raw samples on the protocol's clock: (n_items, repeats) per-inference ms."""
    wall, cpu = sample_interleaved_clocks(items, protocol)
    return cpu if protocol.clock == "thread_cpu" else wall


def measure_interleaved(items: Sequence[Timed], protocol: MeasureProtocol) -> list[LatencyStats]:
    """Time every item under ``protocol``; stats are per single inference, in ms, in item order."""
    if not items:
        return []
    return [LatencyStats.from_samples(row) for row in sample_interleaved(items, protocol)]
