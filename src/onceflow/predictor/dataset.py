"""The predictor's dataset: which subnets to measure, how to measure one, and the resumable CSV.

``data/predictor/arch_acc.csv`` has one row per measured subnet (``arch`` string, ``accuracy``
and mean cross-entropy ``loss`` on the evaluation images, both also on two fixed halves of them
(``_a``, ``_b``), ``seconds``, ``context``), appended and fsynced as each is measured. The
halves estimate how much of the spread between subnets is measurement noise
(:mod:`onceflow.predictor.noise`). ``context`` fingerprints everything a measurement depends on
(sha256 of the supernet weights, the space, the prepared data's content hash, every measurement
setting, the measuring code's import closure and the torch/numpy versions): a rerun keeps the
rows of its own context and skips those archs, so a killed run resumes where it stopped, and
rows measured on another supernet, other data or with other settings, code or libraries are
dropped instead of reused.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from onceflow.artifacts import prepared_meta
from onceflow.data.prepared import PreparedData
from onceflow.errors import DataError
from onceflow.inputs import to_input
from onceflow.io import sha256_files, sha256_json, write_text_atomic
from onceflow.progress import track
from onceflow.search.space import CategoricalSpace, unique_rows
from onceflow.supernet import Arch, SearchSpace
from onceflow.supernet.supernet import Supernet, recalibrate_bn

log = logging.getLogger(__name__)

VALUES = (
    "accuracy", "accuracy_a", "accuracy_b", "loss", "loss_a", "loss_b", "accuracy_r", "loss_r"
)  # fmt: skip
COLUMNS = ("arch", *VALUES, "seconds", "context")


@dataclass(frozen=True)
class Measurement:
    """One subnet's accuracy and mean cross-entropy on the evaluation images, and on each of
    their two fixed halves."""

    accuracy: float
    accuracy_a: float = float("nan")
    accuracy_b: float = float("nan")
    loss: float = float("nan")
    loss_a: float = float("nan")
    loss_b: float = float("nan")
    # Re-measured after BN calibration on an independent train subset (retest subnets only).
    accuracy_r: float = float("nan")
    loss_r: float = float("nan")

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, k) for k in VALUES)


@dataclass(frozen=True)
class Row:
    """A measured subnet as the CSV stores it."""

    m: Measurement
    seconds: float

    def cells(self, arch: str, context: str) -> tuple[str, ...]:
        return (arch, *(f"{v:.6f}" for v in self.m.values()), f"{self.seconds:.3f}", context)


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
    return sha256_json(parts)[:16]


def data_digest(directory: str | os.PathLike[str]) -> str:
    """The prepared data's content hash: ``content_sha256`` of its meta.json when prepare wrote
    one, else sha256 over meta.json and every array file (names and bytes)."""
    d = Path(directory)
    meta = prepared_meta(d / "meta.json")
    if isinstance(meta.get("content_sha256"), str):
        return meta["content_sha256"]
    return sha256_files((f.name, f) for f in sorted(d.glob("*.npy")) + [d / "meta.json"])


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
            m = Measurement(*(float(r[k]) for k in VALUES))
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
    workers: int = 1,
    store: Path | None = None,
) -> tuple[list[Arch], list[Measurement]]:
    """Measure every arch not yet in ``csv_path`` or ``store`` (for ``context``), appending to
    both as it goes. Returns the archs and their measurements, in the order of ``archs``.

    ``store``: this machine's copy of the rows (outside any workspace, see
    :func:`onceflow.hostcache.predictor_rows_dir`), so a flow run that died resumes in the
    next run's fresh workspace; its rows of ``context`` join ``csv_path`` first, and at the end
    ``csv_path`` keeps the rows of ``archs`` only (the store keeps the rest).

    With ``workers`` > 1, ``measure`` runs on that many threads at once (it must be thread-safe:
    :class:`MeterPool`); rows are still appended in the order of ``archs``."""
    path = Path(csv_path)
    done = read_rows(path, context)
    if store is not None:
        kept = read_rows(store, context)
        for arch, row in kept.items():
            if arch not in done:
                append_row(path, arch, row, context)
                done[arch] = row
        if kept:
            log.info("predictor dataset: %d rows of this context in %s", len(kept), store)
    todo = [a for a in archs if str(a) not in done]
    log.info(
        "predictor dataset: %d archs, %d already measured, %d to go (%d at a time)",
        len(archs),
        len(archs) - len(todo),
        len(todo),
        workers,
    )

    def timed(arch: Arch) -> Row:
        t0 = time.perf_counter()
        got = measure(arch)
        m = got if isinstance(got, Measurement) else Measurement(float(got))
        return Row(m, time.perf_counter() - t0)

    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and len(todo) > 1 else None
    try:
        rows = pool.map(timed, todo) if pool else map(timed, todo)
        for arch, row in track(
            zip(todo, rows, strict=True), "predictor: measuring subnets", total=len(todo),
            unit="subnets",
        ):  # fmt: skip
            append_row(path, str(arch), row, context)
            if store is not None:
                append_row(store, str(arch), row, context)
            done[str(arch)] = row
    finally:
        if pool:  # on an error, drop the measurements not started yet
            pool.shutdown(wait=True, cancel_futures=True)
    if store is not None and len(done) > len(archs):
        # The store resumes; the CSV records this run: exactly its archs, so another
        # experiment's rows of the same context (other n_samples) do not leak into it.
        _rewrite(path, {str(a): done[str(a)] for a in archs}, context)
    return list(archs), [done[str(a)].m for a in archs]


@dataclass(frozen=True)
class MeasureSettings:
    """How one subnet's accuracy is measured (params.yaml predictor.*)."""

    calib_images: int  # train images for BN recalibration (a fixed subset)
    eval_images: int | None  # val images the accuracy is measured on (None: all)
    batch_size: int  # evaluation batch
    seed: int
    # BN statistics from batches of this many calibration images (None: all in one batch, the
    # exact mean/variance of the fixed subset, the same set for every subnet).
    calib_batch_size: int | None
    # The first this many subnets are measured a second time after BN calibration on another
    # train subset: the label noise then includes the calibration's (metrics tau_ceiling).
    retest: int


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
        cperm = rng.permutation(n_train)
        n_cal = min(s.calib_images, n_train)
        ci = np.sort(cperm[:n_cal])
        vi = np.sort(rng.permutation(n_val)[:n_eval])
        self._calib_u8 = np.asarray(data.train.images[ci])
        # The retest's calibration subset: the next n_cal of the permutation (disjoint when the
        # train split has room, else a fresh draw that overlaps).
        ri = cperm[n_cal : 2 * n_cal] if 2 * n_cal <= n_train else rng.permutation(n_train)[:n_cal]
        self._retest_u8 = np.asarray(data.train.images[np.sort(ri)])
        self._val_u8 = np.asarray(data.val.images[vi])
        self._val_y = torch.from_numpy(np.asarray(data.val.labels[vi]).astype(np.int64))
        self._half_a = torch.from_numpy(rng.permutation(n_eval) < n_eval // 2)
        self._inputs: dict[tuple[str, int], torch.Tensor] = {}
        self.n_eval = n_eval

    def _input(self, which: str, resolution: int) -> torch.Tensor:
        key = (which, resolution)
        if key not in self._inputs:
            u8 = {"calib": self._calib_u8, "retest": self._retest_u8, "val": self._val_u8}[which]
            self._inputs[key] = to_input(u8, self.meta, resolution)
        return self._inputs[key]

    @torch.inference_mode()
    def _correct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image: whether the top-1 class is right, and the cross-entropy."""
        bs = self.s.batch_size
        self.net.eval()
        logits = torch.cat([self.net(x[i : i + bs]) for i in range(0, len(x), bs)])
        loss = torch.nn.functional.cross_entropy(logits, self._val_y, reduction="none")
        return logits.argmax(1) == self._val_y, loss

    def _run(self, arch: Arch, calib: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._input(calib, arch.resolution)
        recalibrate_bn(self.net, x, len(x), batch_size=self.s.calib_batch_size or len(x))
        return self._correct(self._input("val", arch.resolution))

    def measure(self, arch: Arch, retest: bool = False) -> Measurement:
        """Accuracy and loss (whole set and halves); with ``retest`` also both after BN
        calibration on the independent subset."""
        self.net.set_active(arch)
        ok, loss = self._run(arch, "calib")
        a = self._half_a
        r_ok, r_loss = self._run(arch, "retest") if retest else (ok[:0], loss[:0])
        return Measurement(
            _mean(ok), _mean(ok[a]), _mean(ok[~a]), _mean(loss), _mean(loss[a]), _mean(loss[~a]),
            _mean(r_ok), _mean(r_loss),
        )  # fmt: skip

    def __call__(self, arch: Arch) -> float:
        return self.measure(arch).accuracy


class MeterPool:
    """Thread-safe measurement over several meters (each with its own copy of the supernet):
    a call takes a free meter, measures, and returns it. Torch releases the GIL inside its ops,
    so ``n`` single-threaded meters on ``n`` threads keep ``n`` cores busy, where one meter with
    ``n`` intra-op threads keeps about one busy (its batches are too small to split well)."""

    def __init__(self, meters: Sequence[SubnetMeter]) -> None:
        self._free: queue.SimpleQueue[SubnetMeter] = queue.SimpleQueue()
        for m in meters:
            self._free.put(m)
        self.size = len(meters)

    def measure(self, arch: Arch, retest: bool = False) -> Measurement:
        meter = self._free.get()
        try:
            return meter.measure(arch, retest)
        finally:
            self._free.put(meter)
