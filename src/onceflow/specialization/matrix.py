"""The cross-target matrix: every target's pick for every budget, placed on every other target.

For a pair (source S, host H) and budget slot i (the i-th budget of each target, e.g. the 0.5
fraction of each target's own latency range), S's pick is put on H: its latency on H (H's
calibrated latency estimator), whether it meets H's budget, and its accuracy under H's
precision, against H's own pick for that slot. If S's pick is as fast and as accurate on H as
H's pick, specializing for H bought nothing; a budget violation or an accuracy loss is what
specialization pays for. Pure: estimators and accuracy come in as functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy import stats

from onceflow.supernet.arch import Arch

# (arch, host target name) -> test accuracy under the host's precision; None: not measurable here
AccuracyFn = Callable[[Arch, str], float | None]
# (arch, host target name) -> latency measured on the host's backend (ms); None: cannot run here
MeasureFn = Callable[[Arch, str], float | None]


@dataclass(frozen=True)
class Slot:
    """One budget of one target and the arch the search picked for it."""

    budget_ms: float
    arch: Arch


@dataclass(frozen=True)
class TargetPicks:
    """What the report needs of one target."""

    name: str
    precision: str
    slots: tuple[Slot, ...]
    predict_ms: Callable[[Sequence[Arch]], np.ndarray]  # this target's latency estimator
    validation_ms: dict[str, float] = field(default_factory=dict)  # measured, by arch string


def rank_correlation(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Kendall tau and Spearman rho of two targets' measured latencies over common archs."""
    common = sorted(set(a) & set(b))
    if len(common) < 3:
        return {"n": len(common), "kendall_tau": None, "spearman": None}
    x, y = [a[k] for k in common], [b[k] for k in common]
    tau, rho = stats.kendalltau(x, y).statistic, stats.spearmanr(x, y).statistic
    return {
        "n": len(common),
        "kendall_tau": None if math.isnan(tau) else float(tau),
        "spearman": None if math.isnan(rho) else float(rho),
    }


def _pct(x: float) -> float:
    return round(100.0 * x, 3)


def _memo(fn: Callable[[Arch, str], float | None] | None) -> Callable[[Arch, str], float | None]:
    """``fn`` called once per (arch, host); a missing ``fn`` answers None."""
    cache: dict[tuple[Arch, str], float | None] = {}

    def call(arch: Arch, host: str) -> float | None:
        if fn is None:
            return None
        if (arch, host) not in cache:
            cache[(arch, host)] = fn(arch, host)
        return cache[(arch, host)]

    return call


def _pair_cells(
    src: TargetPicks,
    host: TargetPicks,
    n_slots: int,
    acc: Callable[[Arch, str], float | None],
    measured: Callable[[Arch, str], float | None],
) -> list[dict[str, Any]]:
    """One cell per budget slot: ``src``'s pick placed on ``host``, against ``host``'s own."""
    archs = [src.slots[i].arch for i in range(n_slots)]
    lat = host.predict_ms(archs)
    rows = []
    for i, arch in enumerate(archs):
        own = host.slots[i]
        own_lat = float(host.predict_ms([own.arch])[0])
        a_src, a_own = acc(arch, host.name), acc(own.arch, host.name)
        gain = None if a_src is None or a_own is None else _pct(a_own - a_src)
        m_src, m_own = measured(arch, host.name), measured(own.arch, host.name)
        rows.append(
            {
                "source": src.name,
                "host": host.name,
                "slot": i,
                "same_arch": arch == own.arch,
                "source_arch": str(arch),
                "host_arch": str(own.arch),
                "host_budget_ms": own.budget_ms,
                "source_latency_on_host_ms": float(lat[i]),
                "host_pick_latency_ms": own_lat,
                "source_measured_on_host_ms": m_src,
                "host_pick_measured_ms": m_own,
                "over_budget_pct": _pct(float(lat[i]) / own.budget_ms - 1.0),
                "within_budget": bool(lat[i] <= own.budget_ms * (1 + 1e-9)),
                "source_accuracy_on_host": a_src,
                "host_pick_accuracy": a_own,
                "specialization_gain_pp": gain,  # host pick - source pick, on host
            }
        )
    return rows


def _pair_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One (source, host) pair's figures over its slots."""
    gains = [r["specialization_gain_pp"] for r in rows if r["specialization_gain_pp"] is not None]
    slower = [
        r["source_measured_on_host_ms"] / r["host_pick_measured_ms"]
        for r in rows
        if r["source_measured_on_host_ms"] and r["host_pick_measured_ms"]
    ]
    return {
        "same_picks": sum(r["same_arch"] for r in rows),
        "budget_violations": sum(not r["within_budget"] for r in rows),
        # measured: the source's pick over the host's own pick, same slot
        "measured_latency_ratio_mean": round(float(np.mean(slower)), 3) if slower else None,
        "max_over_budget_pct": max(r["over_budget_pct"] for r in rows),
        "mean_gain_pp": round(float(np.mean(gains)), 3) if gains else None,
        "max_gain_pp": round(float(np.max(gains)), 3) if gains else None,
    }


def _verdict(coincide: bool, n_slots: int, cells: list[dict[str, Any]], violations: int,
             worse: list[float], as_good: int) -> str:  # fmt: skip
    if coincide:
        return (
            f"the picks coincide: every target chose the same subnet for each of the {n_slots} "
            "budgets, so one subnet fits all these targets (specialization changed nothing)"
        )
    return (
        f"the picks differ; of {len(cells)} foreign picks, {violations} broke the host's "
        f"budget, {len(worse)} met it with lower accuracy"
        + (f" (by {np.mean(worse):.2f} pp on average)" if worse else "")
        + f", {as_good} met it at equal or better accuracy"
    )


def cross_target(
    targets: Sequence[TargetPicks], accuracy: AccuracyFn, measure: MeasureFn | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline metrics, details) of the cross-target matrix; see the module doc. With
    ``measure``, every pick is also timed for real on every host that runs here."""
    if len(targets) < 2:
        raise ValueError("a cross-target report needs at least two targets")
    names = [t.name for t in targets]
    n_slots = min(len(t.slots) for t in targets)
    acc, measured = _memo(accuracy), _memo(measure)
    cells, pairs = [], {}
    for host in targets:
        for src in targets:
            if src is not host:
                rows = _pair_cells(src, host, n_slots, acc, measured)
                cells += rows
                pairs[f"{src.name}->{host.name}"] = _pair_summary(rows)
    coincide = all(len({t.slots[i].arch for t in targets}) == 1 for i in range(n_slots))
    correlations = {
        f"{a.name}|{b.name}": rank_correlation(a.validation_ms, b.validation_ms)
        for a, b in combinations(targets, 2)
    }
    violations = sum(p["budget_violations"] for p in pairs.values())
    gains = [c["specialization_gain_pp"] for c in cells if c["specialization_gain_pp"] is not None]
    # Within the host's budget, did the host's own pick win on accuracy?
    fair = [c for c in cells if c["within_budget"] and c["specialization_gain_pp"] is not None]
    worse = [c["specialization_gain_pp"] for c in fair if c["specialization_gain_pp"] > 0]
    as_good = len(fair) - len(worse)
    verdict = _verdict(coincide, n_slots, cells, violations, worse, as_good)
    summary = {
        "target_names": names,
        "n_slots": n_slots,
        "picks_coincide": coincide,
        "budget_violations": violations,
        "cases": len(cells),
        "mean_specialization_gain_pp": round(float(np.mean(gains)), 3) if gains else None,
        "foreign_within_budget_less_accurate": len(worse),
        "foreign_within_budget_as_accurate": as_good,
        "pairs": pairs,
        "latency_rank_correlation": {
            k: {"kendall_tau": v["kendall_tau"], "spearman": v["spearman"], "n": v["n"]}
            for k, v in correlations.items()
        },
        "verdict": verdict,
    }
    details = {
        **summary,
        "targets": [
            {
                "name": t.name,
                "precision": t.precision,
                "slots": [{"budget_ms": s.budget_ms, "arch": str(s.arch)} for s in t.slots],
            }
            for t in targets
        ],
        "cells": cells,
        "latency_rank_correlation": correlations,
        "verdict": verdict,
    }
    # The one headline column (dvc metrics show stays narrow); the details hold the matrix.
    headline = {"gain_pp": summary["mean_specialization_gain_pp"]}
    return headline, details
