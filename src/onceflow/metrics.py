"""Headline metrics and their details: what ``dvc metrics show`` lists vs. everything else.

``dvc metrics show`` prints ONE table whose columns are the union of every metrics file's keys,
so each ``metrics/<stage>.json`` keeps a few scalars named from one shared vocabulary
(:data:`HEADLINE_KEYS`; a key means the same thing in every row), and the stage's full record
goes to ``metrics/<stage>.details.json`` next to it (git-tracked too; dvc.yaml declares it an
uncached metric so that the stage stays run-cacheable, so give ``dvc metrics show`` the
headline files, or use ``onceflow exps``, to leave the details out). The run report reads both.
On the default run the headline table is about 100 characters wide.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onceflow.io import write_json_atomic

DETAILS_SUFFIX = ".details.json"

# The shared vocabulary of headline columns: every metrics file picks from these.
HEADLINE_KEYS: dict[str, str] = {
    "passed": "the stage's check passed (data gate; parity of every package)",
    "images": "images in the prepared train, val and test splits",
    "top1": "top-1 accuracy (fraction) of the stage's best model",
    "kendall_tau": "rank agreement of an estimate with measurements on held-out subnets",
    "within_10pct": "fraction of estimated latencies within ±10% of the measured ones",
    "models": "models the stage produced (packages built; search picks; packages in the registry)",
    "ceiling": "the kendall_tau a perfect predictor would reach against these noisy labels",
    "gain_pp": "accuracy gain in pp: a pick over uniform random search (worst budget); a target's "
    "own pick over the other targets' picks (specialization, mean)",
}

Scalar = bool | int | float | None


def details_path(metrics_path: str | os.PathLike[str]) -> Path:
    """``metrics/latency/ort-cpu.json`` -> ``metrics/latency/ort-cpu.details.json``."""
    p = Path(metrics_path)
    stem = p.name[: -len(".json")] if p.name.endswith(".json") else p.name
    return p.with_name(stem + DETAILS_SUFFIX)


def _scalar(v: Any) -> Scalar:
    if v is None or isinstance(v, bool | int):
        return v
    if isinstance(v, float):  # 4 decimals: a headline is read, the details keep the rest
        return round(v, 4) if math.isfinite(v) else None
    raise TypeError(f"headline metric values are scalars, got {type(v).__name__}: {v!r}")


def write_metrics(
    path: str | os.PathLike[str],
    headline: Mapping[str, Any],
    details: Mapping[str, Any],
    details_to: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the details (to ``details_to``, by default :func:`details_path`), then the headline
    file, each atomically; returns the details path. Headline keys come from
    :data:`HEADLINE_KEYS`; values are scalars (floats rounded to 4 decimals, non-finite: null)."""
    unknown = sorted(set(headline) - set(HEADLINE_KEYS))
    if unknown:
        raise ValueError(f"headline keys {unknown} are not in HEADLINE_KEYS; add them there")
    head = {k: _scalar(v) for k, v in headline.items()}
    out = write_json_atomic(details_to or details_path(path), dict(details))
    write_json_atomic(path, head)
    return out


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A stage's details merged with its headline (headline wins), or None when neither file
    exists or parses. Files written before the split (everything in one file) read the same."""
    out: dict[str, Any] = {}
    found = False
    for p in (details_path(path), Path(path)):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError, ValueError, RecursionError):
            continue  # absent, or not JSON (ValueError: JSON, UTF-8; RecursionError: nesting)
        if isinstance(doc, dict):
            out.update(doc)
            found = True
    return out if found else None


def _max(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, int | float)]
    return max(nums) if nums else None


def data_headline(m: Mapping[str, Any]) -> dict[str, Scalar]:
    """prepare: the gate's verdict and how many images passed through it."""
    return {
        "passed": bool(m["validation_success"]),
        "images": int(m["n_train"] + m["n_val"] + m["n_test"]),
    }


def supernet_headline(m: Mapping[str, Any]) -> dict[str, Scalar]:
    """train_supernet: the largest subnet's val top-1 (the rest is in the details)."""
    return {"top1": m.get("val_acc_max")}


def latency_headline(m: Mapping[str, Any]) -> dict[str, Scalar]:
    """latency_table@T: the estimator's fidelity on the held-out subnets."""
    return {"kendall_tau": m.get("kendall_tau"), "within_10pct": m.get("within_10pct")}


def package_headline(m: Mapping[str, Any]) -> dict[str, Scalar]:
    """package@T: models built, the best one's test top-1, parity, and how many packages'
    measured latency lies within ±10% of the estimator's prediction."""
    pkgs = list(m.get("packages") or [])
    ratios = [p["latency_ratio"] for p in pkgs if p.get("latency_ratio") is not None]
    return {
        "models": len(pkgs),
        "top1": _max([p.get("test_accuracy") for p in pkgs]),
        "passed": bool(m.get("all_parity_passed", False)),
        "within_10pct": (
            sum(abs(r - 1.0) <= 0.10 for r in ratios) / len(ratios) if ratios else None
        ),
    }


def publish_headline(m: Mapping[str, Any]) -> dict[str, Scalar]:
    """publish: how many packages the registry holds from this run."""
    return {"models": int(m.get("n_packages", 0))}
