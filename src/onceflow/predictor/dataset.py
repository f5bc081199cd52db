"""The predictor's dataset: which subnets to measure, how to measure one, and the resumable CSV.

``data/predictor/arch_acc.csv`` has one row per measured subnet (``arch`` string, ``accuracy``,
``accuracy_a`` and ``accuracy_b`` on two fixed halves of the evaluation images, ``seconds``,
``context``), appended and fsynced as each is measured. The halves estimate how much of the
spread between subnets is measurement noise (:mod:`onceflow.predictor.noise`).
``context`` fingerprints what the accuracy depends on (supernet weights, space, measurement
settings): a rerun keeps the rows of its own context and skips those archs, so a killed run
resumes where it stopped, and rows measured on another supernet or with other settings are
dropped instead of reused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onceflow.data.prepared import PreparedData
from onceflow.errors import DataError
from onceflow.io import write_text_atomic
from onceflow.progress import track
from onceflow.search.space import CategoricalSpace, unique_rows
from onceflow.supernet import Arch, SearchSpace
from onceflow.supernet.supernet import Supernet, recalibrate_bn
from onceflow.train import to_input

log = logging.getLogger(__name__)

COLUMNS = ("arch", "accuracy", "accuracy_a", "accuracy_b", "seconds", "context")


@dataclass(frozen=True)
class Measurement:
    """One subnet's accuracy on the evaluation images, and on each of their two fixed halves."""

    accuracy: float
    accuracy_a: float = float("nan")
    accuracy_b: float = float("nan")


@dataclass(frozen=True)
class Row:
    """A measured subnet as the CSV stores it."""

    m: Measurement
    seconds: float

    def cells(self, arch: str, context: str) -> tuple[str, ...]:
        m = self.m
        return (
            arch,
            *(f"{v:.6f}" for v in (m.accuracy, m.accuracy_a, m.accuracy_b)),
            f"{self.seconds:.3f}",
            context,
        )


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


def read_rows(path: str | os.PathLike[str], context: str) -> dict[str, Row]:
    """Rows of ``context`` by arch string. A partial last line (killed mid-write), rows of other
    contexts and a file of another column layout (an older onceflow) are dropped, and the file
    is rewritten without them."""
    p = Path(path)
    if not p.exists():
        return {}
    try:
        text = p.read_text(encoding="utf-8")
        if "\0" in text:
            raise UnicodeError("NUL byte")
    except IsADirectoryError:
        raise DataError(f"{p}: a directory where the predictor's CSV belongs; remove it") from None
    except UnicodeError as err:  # binary garbage, not an append-only CSV of ours
        log.warning("%s: not a text CSV (%s); remeasuring", p, err)
        _rewrite(p, {}, context)
        return {}
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    rows: dict[str, Row] = {}
    dropped = 0
    reader = csv.DictReader(io.StringIO(complete))
    try:
        fieldnames = reader.fieldnames
    except csv.Error:
        fieldnames = ()
    if fieldnames is not None and tuple(fieldnames) != COLUMNS:
        log.warning(
            "%s: columns %s are not %s (another onceflow version); remeasuring",
            p,
            reader.fieldnames,
            list(COLUMNS),
        )
        reader = iter(())  # type: ignore[assignment]
        dropped = complete.count("\n") - 1
    parsed, broken = _rows(reader)
    dropped += broken
    for r in parsed:
        try:
            if r["context"] != context:
                raise ValueError
            m = Measurement(float(r["accuracy"]), float(r["accuracy_a"]), float(r["accuracy_b"]))
            if not 0.0 <= m.accuracy <= 1.0:  # also drops NaN; the halves may be NaN
                raise ValueError
            rows[r["arch"]] = Row(m, float(r["seconds"]))
        except (ValueError, TypeError):
            dropped += 1
    if dropped or complete != text:
        log.info("%s: dropped %d stale or malformed rows; keeping %d", p, dropped, len(rows))
        _rewrite(p, rows, context)
    return rows


def _rows(reader: Iterator[dict[str, str]]) -> tuple[list[dict[str, str]], bool]:
    """The reader's rows up to the first malformed CSV line, and whether there was one."""
    out: list[dict[str, str]] = []
    try:
        for r in reader:
            out.append(r)
    except csv.Error:
        return out, True
    return out, False


def _line(values: Sequence[object]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _rewrite(p: Path, rows: dict[str, Row], context: str) -> None:
    body = "".join(_line(row.cells(a, context)) for a, row in rows.items())
    write_text_atomic(p, _line(COLUMNS) + body)


def append_row(path: Path, arch: str, row: Row, context: str) -> None:
    """Append one measured row and fsync it (the header first if the file is new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8") as fh:
        if new:
            fh.write(_line(COLUMNS))
        fh.write(_line(row.cells(arch, context)))
        fh.flush()
        os.fsync(fh.fileno())


def build_dataset(
    archs: Sequence[Arch],
    measure: Callable[[Arch], Measurement | float],
    csv_path: str | os.PathLike[str],
    context: str,
) -> tuple[list[Arch], list[Measurement]]:
    """Measure every arch not yet in ``csv_path`` (for ``context``), appending as it goes.
    Returns the archs and their measurements, in the order of ``archs``."""
    path = Path(csv_path)
    done = read_rows(path, context)
    todo = [a for a in archs if str(a) not in done]
    log.info(
        "predictor dataset: %d archs, %d already measured, %d to go",
        len(archs),
        len(archs) - len(todo),
        len(todo),
    )
    for arch in track(todo, "predictor: measuring subnets", unit="subnets"):
        t0 = time.perf_counter()
        got = measure(arch)
        m = got if isinstance(got, Measurement) else Measurement(float(got))
        row = Row(m, time.perf_counter() - t0)
        append_row(path, str(arch), row, context)
        done[str(arch)] = row
    return list(archs), [done[str(a)].m for a in archs]


@dataclass(frozen=True)
class MeasureSettings:
    """How one subnet's accuracy is measured (params.yaml predictor.*)."""

    calib_images: int  # train images for BN recalibration (a fixed subset)
    eval_images: int | None  # val images the accuracy is measured on (None: all)
    batch_size: int
    seed: int


def _mean(correct: torch.Tensor) -> float:
    return float(correct.float().mean()) if len(correct) else float("nan")


class SubnetMeter:
    """Accuracy of a subnet: set it active, recalibrate BN on a fixed train subset, evaluate on
    a fixed val subset (and on each of its two fixed random halves). Inputs are converted once
    per resolution and cached, so a measurement is forward passes only."""

    def __init__(self, supernet: Supernet, data: PreparedData, s: MeasureSettings) -> None:
        self.net, self.meta, self.s = supernet, data.meta, s
        rng = np.random.default_rng(s.seed)
        n_train, n_val = len(data.train), len(data.val)
        if n_val == 0 or n_train == 0:
            raise DataError("prepared data has an empty train or val split; rerun prepare")
        n_eval = n_val if s.eval_images is None else min(s.eval_images, n_val)
        ci = np.sort(rng.permutation(n_train)[: min(s.calib_images, n_train)])
        vi = np.sort(rng.permutation(n_val)[:n_eval])
        self._calib_u8 = np.asarray(data.train.images[ci])
        self._val_u8 = np.asarray(data.val.images[vi])
        self._val_y = torch.from_numpy(np.asarray(data.val.labels[vi]).astype(np.int64))
        self._half_a = torch.from_numpy(rng.permutation(n_eval) < n_eval // 2)
        self._inputs: dict[tuple[str, int], torch.Tensor] = {}
        self.n_eval = n_eval

    def _input(self, which: str, resolution: int) -> torch.Tensor:
        key = (which, resolution)
        if key not in self._inputs:
            u8 = self._calib_u8 if which == "calib" else self._val_u8
            self._inputs[key] = to_input(u8, self.meta, resolution)
        return self._inputs[key]

    @torch.inference_mode()
    def _correct(self, x: torch.Tensor) -> torch.Tensor:
        bs = self.s.batch_size
        self.net.eval()
        pred = torch.cat([self.net(x[i : i + bs]).argmax(1) for i in range(0, len(x), bs)])
        return pred == self._val_y

    def measure(self, arch: Arch) -> Measurement:
        self.net.set_active(arch)
        x = self._input("calib", arch.resolution)
        recalibrate_bn(self.net, x, len(x), batch_size=self.s.batch_size)
        ok = self._correct(self._input("val", arch.resolution))
        return Measurement(_mean(ok), _mean(ok[self._half_a]), _mean(ok[~self._half_a]))

    def __call__(self, arch: Arch) -> float:
        return self.measure(arch).accuracy
