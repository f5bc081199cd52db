"""The predictor's dataset: which subnets to measure, how to measure one, and the resumable CSV.

``data/predictor/arch_acc.csv`` has one row per measured subnet (``arch`` string, ``accuracy``,
``seconds``, ``context``), appended and fsynced as each is measured. ``context`` fingerprints
what the accuracy depends on (supernet weights, space, measurement settings): a rerun keeps the
rows of its own context and skips those archs, so a killed run resumes where it stopped, and
rows measured on another supernet or with other settings are dropped instead of reused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onceflow.data.prepared import PreparedData
from onceflow.errors import DataError
from onceflow.io import write_text_atomic
from onceflow.search.space import CategoricalSpace, unique_rows
from onceflow.supernet import Arch, SearchSpace
from onceflow.supernet.supernet import Supernet, recalibrate_bn
from onceflow.train import evaluate, to_input

log = logging.getLogger(__name__)

COLUMNS = ("arch", "accuracy", "seconds", "context")


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    """``n`` distinct subnets spread over the size range: the smallest and the largest, then
    rows whose per-arch level p ~ U(0, 1) sets every dimension's index ~ Binomial(card-1, p)
    (choices are sorted ascending, so p moves the whole arch from small to large).
    Deterministic in ``seed``; a draw of 4n candidates bounds the work."""
    cs = CategoricalSpace.from_dimensions(space.dimensions())
    rng = np.random.default_rng(seed)
    x = np.concatenate([cs.extremes(), cs.sample_spread(rng, 4 * max(n, 2))])
    archs = [space.decode(row) for row in x]
    enc = space.encode_batch(archs)  # canonical: equivalent rows collapse
    _, first = unique_rows(enc)
    out = [archs[i] for i in first[:n]]
    if len(out) < n:
        log.warning("only %d distinct archs could be drawn (asked %d)", len(out), n)
    return out


def context_digest(parts: dict) -> str:
    """Short fingerprint of what a measurement depends on."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_rows(path: str | os.PathLike[str], context: str) -> dict[str, tuple[float, float]]:
    """Rows of ``context`` (arch -> (accuracy, seconds)). A partial last line (killed mid-write)
    and rows of other contexts are dropped, and the file is rewritten without them."""
    p = Path(path)
    if not p.exists():
        return {}
    text = p.read_text(encoding="utf-8")
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    rows: dict[str, tuple[float, float]] = {}
    dropped = 0
    reader = csv.DictReader(io.StringIO(complete))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
        raise DataError(f"{p}: columns {reader.fieldnames}, expected {list(COLUMNS)}; delete it")
    for r in reader:
        try:
            if r["context"] != context:
                raise ValueError
            rows[r["arch"]] = (float(r["accuracy"]), float(r["seconds"]))
        except (ValueError, TypeError):
            dropped += 1
    if dropped or complete != text:
        log.info("%s: dropped %d stale or malformed rows; keeping %d", p, dropped, len(rows))
        _rewrite(p, rows, context)
    return rows


def _line(values: Sequence[object]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _rewrite(p: Path, rows: dict[str, tuple[float, float]], context: str) -> None:
    body = "".join(_line((a, f"{acc:.6f}", f"{s:.3f}", context)) for a, (acc, s) in rows.items())
    write_text_atomic(p, _line(COLUMNS) + body)


def append_row(path: Path, arch: str, accuracy: float, seconds: float, context: str) -> None:
    """Append one measured row and fsync it (the header first if the file is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write(_line(COLUMNS))
        fh.write(_line((arch, f"{accuracy:.6f}", f"{seconds:.3f}", context)))
        fh.flush()
        os.fsync(fh.fileno())


def build_dataset(
    archs: Sequence[Arch],
    measure: Callable[[Arch], float],
    csv_path: str | os.PathLike[str],
    context: str,
) -> tuple[list[Arch], np.ndarray]:
    """Measure every arch not yet in ``csv_path`` (for ``context``), appending as it goes.
    Returns the archs and their accuracies, in the order of ``archs``."""
    path = Path(csv_path)
    done = read_rows(path, context)
    todo = [a for a in archs if str(a) not in done]
    log.info(
        "predictor dataset: %d archs, %d already measured, %d to go",
        len(archs),
        len(archs) - len(todo),
        len(todo),
    )
    t_start = time.perf_counter()
    for i, arch in enumerate(todo):
        t0 = time.perf_counter()
        acc = float(measure(arch))
        secs = time.perf_counter() - t0
        append_row(path, str(arch), acc, secs, context)
        done[str(arch)] = (acc, secs)
        if (i + 1) % 25 == 0 or i + 1 == len(todo):
            log.info("measured %d/%d (%.1fs)", i + 1, len(todo), time.perf_counter() - t_start)
    return list(archs), np.asarray([done[str(a)][0] for a in archs], dtype=np.float64)


@dataclass(frozen=True)
class MeasureSettings:
    """How one subnet's accuracy is measured (params.yaml predictor.*)."""

    calib_images: int = 500  # train images for BN recalibration
    eval_images: int = 2000  # val images the accuracy is measured on (fixed subset)
    batch_size: int = 500
    seed: int = 0


class SubnetMeter:
    """Accuracy of a subnet: set it active, recalibrate BN on a fixed train subset, evaluate on
    a fixed val subset. Inputs are converted once per resolution and cached."""

    def __init__(self, supernet: Supernet, data: PreparedData, s: MeasureSettings) -> None:
        self.net, self.meta, self.s = supernet, data.meta, s
        rng = np.random.default_rng(s.seed)
        n_train, n_val = len(data.train), len(data.val)
        if n_val == 0 or n_train == 0:
            raise DataError("prepared data has an empty train or val split; rerun prepare")
        ci = np.sort(rng.permutation(n_train)[: min(s.calib_images, n_train)])
        vi = np.sort(rng.permutation(n_val)[: min(s.eval_images, n_val)])
        self._calib_u8 = np.asarray(data.train.images[ci])
        self._val_u8 = torch.from_numpy(np.asarray(data.val.images[vi]))
        self._val_y = np.asarray(data.val.labels[vi])
        self._calib: dict[int, torch.Tensor] = {}
        self.n_eval = len(vi)

    def calib(self, resolution: int) -> torch.Tensor:
        if resolution not in self._calib:
            self._calib[resolution] = to_input(self._calib_u8, self.meta, resolution)
        return self._calib[resolution]

    def __call__(self, arch: Arch) -> float:
        self.net.set_active(arch)
        x = self.calib(arch.resolution)
        recalibrate_bn(self.net, x, len(x), batch_size=self.s.batch_size)
        return evaluate(
            self.net, self._val_u8, self._val_y, self.meta, arch.resolution, self.s.batch_size
        )
