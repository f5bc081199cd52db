"""Latency for a device that is not attached: export sample subnets, time them there, import.

``onceflow latency export`` writes N subnets as ONNX files plus ``manifest.json`` (each file's
arch and input shape) and a README on the results format; the subnets are chosen to cover the
space (:func:`covering_archs`: every resolution alike, spread from the smallest to the largest
compute, min and max arch included). The user times them on the device with any tool and
writes a CSV with a ``latency_ms`` column and an ``arch`` (or manifest ``id``) column.
``onceflow latency import`` checks it (:func:`read_results`) and writes the merged results file
of the target; ``latency_table@<T>`` (``timings: imported``) fits the measured-subnet estimator on
it (:func:`build_imported_table`). With ``--transfer-from S`` the import also keeps S's per-layer
table (:class:`Transfer`, ``devices/<T>.lut.json``): its raw sum becomes a feature candidate of
the fit, so a new device transfers from a measured one where that helps on held-out folds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from onceflow.config import LatencyTarget
from onceflow.errors import ConfigError
from onceflow.latency.estimator import LatencyEstimator
from onceflow.latency.fidelity import fidelity
from onceflow.latency.lut import Lut, check_coverage
from onceflow.latency.measured import ArchFeatures, MeasuredEstimator, fit_measured
from onceflow.latency.table import TableResult, sample_distinct
from onceflow.supernet.arch import Arch
from onceflow.supernet.space import SearchSpace

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# The results file's columns (onceflow.devices writes the same header for attached targets).
RESULTS_HEADER = ("arch", "latency_ms")
VALIDATION_SHARE = 0.2  # imported subnets held out for the reported fidelity
MIN_VALIDATION = 5

README = """Time every .onnx file here on the device, with any tool, at the input shape that
manifest.json gives (float32, NCHW). Report per-inference latency in milliseconds (per batch,
as the input shape has it) in a CSV with a header line and two columns:

    arch,latency_ms            (arch: the manifest's "arch" string)
    r28-d1_2_3_1-w1_...,1.234
or  id,latency_ms              (id: the manifest's "id", e.g. s007)

Repeated rows of one subnet are merged (their median). Then:

    onceflow latency import --target {target} RESULTS.csv
"""


def covering_archs(space: SearchSpace, n: int, seed: int = 0, pool_factor: int = 20) -> list[Arch]:
    """``n`` distinct archs spread over the space: min and max, then for each resolution alike
    a share of a large random pool taken at evenly spaced quantiles of compute (MACs)."""
    if n < 2:
        raise ConfigError(f"--n {n}: export at least 2 subnets")
    rng = np.random.default_rng(seed)
    ends = list(dict.fromkeys([space.min_arch(), space.max_arch()]))[:n]
    pool = sample_distinct(space, min(pool_factor * n, space.size() - len(ends)), rng, set(ends))
    feats = ArchFeatures(space)
    enc = space.encode_batch(pool)
    cost = feats.matrix(enc, "costs")[:, :7].sum(axis=1)  # stem, head and block MMACs + volume
    res = np.asarray([a.resolution for a in pool])
    out = list(ends)
    left = n - len(out)
    groups = [np.flatnonzero(res == r) for r in space.resolutions]
    share = np.full(len(groups), left // len(groups))
    share[: left % len(groups)] += 1
    for g, k in zip(groups, share, strict=True):
        if k == 0 or len(g) == 0:
            continue
        order = g[np.argsort(cost[g], kind="stable")]
        picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(k, len(order)))).astype(int))
        out += [pool[i] for i in order[picks]]
    taken = set(out)
    out += [a for a in pool if a not in taken][: n - len(out)]  # rounding leftovers
    return out[:n]


@dataclass(frozen=True)
class ExportedSubnet:
    id: str
    arch: Arch
    input_shape: tuple[int, int, int, int]
    onnx: bytes

    @property
    def file(self) -> str:
        return f"{self.id}.onnx"


def export_subnets(
    space: SearchSpace,
    extract: Callable[[Arch], nn.Module],
    archs: Sequence[Arch],
    batch_size: int,
    to_onnx: Callable[[nn.Module, tuple[int, ...]], bytes],
) -> list[ExportedSubnet]:
    """Each arch as static-shape ONNX bytes (batch ``batch_size``), ids s000, s001, ..."""
    out = []
    width = max(3, len(str(len(archs) - 1)))
    for i, a in enumerate(archs):
        shape = (batch_size, space.in_channels, a.resolution, a.resolution)
        out.append(ExportedSubnet(f"s{i:0{width}d}", a, shape, to_onnx(extract(a).eval(), shape)))
    return out


def manifest_json(target: str, space: SearchSpace, subnets: Sequence[ExportedSubnet]) -> dict:
    return {
        "format_version": MANIFEST_VERSION,
        "target": target,
        "space": space.to_json(),
        "input": {"dtype": "float32", "layout": "NCHW", "name": "input"},
        "results": {"columns": list(RESULTS_HEADER), "unit": "ms per inference of one batch"},
        "subnets": [
            {
                "id": s.id,
                "file": s.file,
                "arch": str(s.arch),
                "arch_json": s.arch.to_json(),
                "input_shape": list(s.input_shape),
            }
            for s in subnets
        ],
    }


def readme_text(target: str) -> str:
    return README.format(target=target)


# ----------------------------------------------------------------------------- import
def _bad(source: str, what: str) -> ConfigError:
    return ConfigError(f"{source}: {what}")


def read_results(
    text: str,
    space: SearchSpace,
    *,
    source: str,
    min_rows: int,
    ids: dict[str, str] | None = None,
) -> list[tuple[Arch, float]]:
    """Validated (arch, latency ms) pairs from results CSV ``text``, duplicates merged (median),
    in first-seen order. ConfigError naming ``source``, the line and the value otherwise.
    ``ids`` (manifest id -> arch string) lets rows name subnets by id."""
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise _bad(source, "is empty; expected a header arch,latency_ms and one row per subnet")
    header = [c.strip().lower() for c in rows[0]]
    key = "arch" if "arch" in header else "id" if "id" in header else None
    if key is None or "latency_ms" not in header:
        raise _bad(
            source,
            f"header {rows[0]!r} needs columns arch (or id) and latency_ms; "
            "see the README that `onceflow latency export` wrote",
        )
    ka, kl = header.index(key), header.index("latency_ms")
    merged: dict[Arch, list[float]] = {}
    for line, r in enumerate(rows[1:], start=2):
        if len(r) <= max(ka, kl):
            raise _bad(source, f"line {line}: {len(r)} columns, expected {len(header)}")
        name, raw = r[ka].strip(), r[kl].strip()
        if key == "id":
            if ids is None or name not in ids:
                raise _bad(source, f"line {line}: unknown subnet id {name!r} (not in the manifest)")
            name = ids[name]
        try:
            arch = Arch.parse(name)
            space.validate(arch)
        except ConfigError as err:
            raise _bad(source, f"line {line}: {err}; it is not a subnet of this space") from None
        try:
            ms = float(raw)
        except ValueError:
            raise _bad(source, f"line {line}: latency_ms {raw!r} is not a number") from None
        if not math.isfinite(ms) or ms <= 0:
            raise _bad(source, f"line {line}: latency_ms {raw!r} must be finite and > 0")
        merged.setdefault(space.canonical(arch), []).append(ms)
    if len(merged) < min_rows:
        raise _bad(
            source,
            f"{len(merged)} distinct subnets, need at least {min_rows} "
            "(latency.targets.<T>.measured_subnets); export and time more",
        )
    return [(a, float(np.median(v))) for a, v in merged.items()]


def results_csv(results: Sequence[tuple[Arch, float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULTS_HEADER)
    for a, ms in results:
        w.writerow([str(a), repr(float(ms))])
    return buf.getvalue()


def manifest_ids(manifest_path: Path | None) -> dict[str, str] | None:
    """id -> arch string of an export manifest (None without one)."""
    if manifest_path is None:
        return None
    import json

    try:
        d = json.loads(manifest_path.read_text(encoding="utf-8"))
        return {s["id"]: s["arch"] for s in d["subnets"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{manifest_path}: not an export manifest ({err!r})") from None


# ----------------------------------------------------------------------------- transfer
@dataclass(frozen=True)
class Transfer:
    """The per-layer table of an attached target that an imported one transfers from."""

    source: str  # the attached target's name
    sha256: str  # of the lut.json it was copied from
    lut: Lut


def lut_for_space(d: Any, space: SearchSpace, source: str) -> Lut:
    """A LUT (lut.json contents) that covers every layer of ``space``; ConfigError otherwise."""
    try:
        lut = Lut.from_json(d, source)
        check_coverage(lut, space)
    except ConfigError as err:
        raise ConfigError(str(err) if str(err).startswith(source) else f"{source}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"{source}: not a latency table ({err!r})") from None
    return lut


def transfer_json(source: str, lut_bytes: bytes, space: SearchSpace, where: str) -> dict:
    """devices/<T>.lut.json: attached target ``source``'s lut.json (``lut_bytes``, read from
    ``where``) with its name and sha256, after checking it covers ``space``."""
    try:
        d = json.loads(lut_bytes)
    except ValueError as err:
        raise ConfigError(
            f"{where}: not JSON ({err}); rebuild it (dvc repro latency_table)"
        ) from None
    lut_for_space(d, space, where)
    return {"transfer_from": source, "lut_sha256": hashlib.sha256(lut_bytes).hexdigest(), "lut": d}


def read_transfer(text: str, space: SearchSpace, source: str) -> Transfer | None:
    """The transfer that device_results@<T> passed on, or None (no --transfer-from)."""
    try:
        d = json.loads(text)
        name = d["transfer_from"]
        if name is None:
            return None
        return Transfer(str(name), str(d["lut_sha256"]), lut_for_space(d["lut"], space, source))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{source}: not a transferred LUT ({err!r}); run `onceflow latency import` again"
        ) from None


def build_imported_table(
    space: SearchSpace,
    results: Sequence[tuple[Arch, float]],
    target: LatencyTarget,
    target_name: str,
    seed: int = 0,
    transfer: Transfer | None = None,
) -> TableResult:
    """Fit the measured estimator on imported timings: a seeded share is held out for the
    reported fidelity (fit on the rest), then the model is refit on every row. With a
    ``transfer`` the raw sums of its LUT are a feature candidate (the ``+lut`` sets); the CV
    selection decides whether the model uses them."""
    lut_sum: Callable[[np.ndarray], np.ndarray] | None = None
    if transfer is not None:
        lut_sum = LatencyEstimator(space, transfer.lut).raw
    archs = [a for a, _ in results]
    y = np.asarray([ms for _, ms in results], dtype=np.float64)
    enc = space.encode_batch(archs)
    n = len(y)
    n_val = max(MIN_VALIDATION, int(round(VALIDATION_SHARE * n)))
    if n - n_val < 10:
        raise ConfigError(f"{target_name}: {n} imported subnets are too few to fit and validate")
    perm = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    lut = lut_sum(enc) if lut_sum is not None else None
    held = fit_measured(space, enc[train], y[train], None if lut is None else lut[train], seed=seed)
    est = MeasuredEstimator(space, held, lut_sum)
    predicted = est.predict(enc)
    model = fit_measured(space, enc, y, lut, seed=seed)
    metrics: dict[str, Any] = {
        "target": target_name,
        "backend": target.backend,
        "timings": "imported",
        "estimator": "measured",
        **fidelity(predicted[val], y[val]),
        "n_imported": n,
        "n_measured_train": int(len(train)),
        "measured_model": held.cv["chosen"],
        "final_model": model.cv["chosen"],
        "final_fit": f"refit on all {n} imported subnets after validation",
        "measured_ms_range": [float(y.min()), float(y.max())],
        "transfer_from": transfer.source if transfer else None,
        "transfer_lut_sha256": transfer.sha256 if transfer else None,
        "transfer_lut_offered": transfer is not None,
        "transfer_lut_used": model.uses_lut,
    }
    roles = np.full(n, "training", dtype=object)
    roles[val] = "validation"
    records = [
        {
            "arch": str(a),
            "role": str(roles[i]),
            "measured_ms": float(y[i]),
            "predicted_ms": float(predicted[i]),
        }
        for i, a in enumerate(archs)
    ]
    # the estimator reads the LUT (latency/<T>/lut.json) only where the chosen model uses it
    lut = transfer.lut if transfer is not None and model.uses_lut else None
    return TableResult(lut, None, records, metrics, model, {"chosen": "measured"})
