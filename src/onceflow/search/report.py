"""What the search stage writes: JSON documents of the front and the picks, plot data and the
Pareto plot. ``describe`` turns an encoded row into (arch string, arch JSON); the engine itself
never interprets rows."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from onceflow import plots
from onceflow.search.specialize import Specialization

if TYPE_CHECKING:
    from onceflow.config import BudgetConfig

Describe = Callable[[np.ndarray], tuple[str, dict[str, Any]]]


def arch_describer(decode: Callable[[np.ndarray], Any]) -> Describe:
    """A ``Describe`` from a decoder whose results have ``str()`` and ``.to_json()``."""

    def describe(x: np.ndarray) -> tuple[str, dict[str, Any]]:
        arch = decode(x)
        return str(arch), arch.to_json()

    return describe


def pareto_doc(result: Specialization, target: str, describe: Describe) -> dict[str, Any]:
    """The front, fastest first: one entry per arch with every objective value."""
    f = result.front
    order = np.argsort(f.values["latency"], kind="stable")
    points = []
    for i in order:
        arch, arch_json = describe(f.x[i])
        p: dict[str, Any] = {"arch": arch, "arch_json": arch_json}
        p["predicted_accuracy"] = float(f.values["accuracy"][i])
        p["predicted_latency_ms"] = float(f.values["latency"][i])
        for name, v in f.values.items():
            if name not in ("accuracy", "latency"):
                p[name] = float(v[i])
        points.append(p)
    return {
        "target": target,
        "objectives": list(f.values),
        "latency_range_ms": [result.latency_range.low.value, result.latency_range.high.value],
        "points": points,
    }


def selected_doc(
    result: Specialization, target: str, budgets: BudgetConfig, describe: Describe
) -> dict[str, Any]:
    """One arch per budget with its predicted accuracy and latency."""
    out = []
    for p in result.picks:
        arch, arch_json = describe(p.x)
        out.append(
            {
                "budget_ms": p.budget,
                "budget": p.budget_spec,
                "budget_unit": budgets.unit,
                "arch": arch,
                "arch_json": arch_json,
                "predicted_accuracy": p.accuracy,
                "predicted_latency_ms": p.latency,
            }
        )
    return {"target": target, "selected": out}


def plot_rows(result: Specialization, max_random: int = 2000) -> str:
    """CSV for a DVC scatter plot: latency_ms, accuracy, kind (random | pareto | selected)."""
    buf = io.StringIO()
    buf.write("latency_ms,accuracy,kind\n")
    step = max(1, len(result.samples_x) // max_random)
    for lat, acc in zip(
        result.samples_latency[::step], result.samples_accuracy[::step], strict=True
    ):
        buf.write(f"{lat:.6g},{acc:.6f},random\n")
    f = result.front
    for lat, acc in sorted(zip(f.values["latency"], f.values["accuracy"], strict=True)):
        buf.write(f"{lat:.6g},{acc:.6f},pareto\n")
    for p in result.picks:
        buf.write(f"{p.latency:.6g},{p.accuracy:.6f},selected\n")
    return buf.getvalue()


def pareto_png(
    result: Specialization,
    title: str,
    real_accuracy: list[float] | None = None,
    max_random: int = 3000,
) -> bytes:
    """Scatter of random samples (at most ``max_random`` drawn), the front, the budgets and
    the picks (PNG bytes)."""
    step = max(1, len(result.samples_x) // max_random)
    f = result.front
    o = np.argsort(f.values["latency"])
    picks = [
        {
            "budget": p.budget,
            "latency": p.latency,
            "accuracy": p.accuracy,
            "real_accuracy": None if real_accuracy is None else real_accuracy[i],
        }
        for i, p in enumerate(result.picks)
    ]
    return plots.pareto_png(
        (result.samples_latency[::step], result.samples_accuracy[::step]),
        len(result.samples_x),
        (f.values["latency"][o], f.values["accuracy"][o]),
        picks,
        title,
    )


def search_details(
    result: Specialization, target: str, real_accuracy: list[float] | None = None
) -> dict[str, Any]:
    """metrics/search/<target>.details.json: everything behind the headline -- per budget the
    predicted vs measured accuracy of the pick, its search's evaluations and what uniform
    random sampling found, the reference point and the latency range."""
    picks = []
    for i, p in enumerate(result.picks):
        d: dict[str, Any] = {
            "budget_ms": p.budget,
            "predicted_accuracy": p.accuracy,
            "predicted_latency_ms": p.latency,
            "random_best_accuracy": p.random_best_accuracy,
            "gain_over_random_pp": 100.0 * (p.accuracy - p.random_best_accuracy),
            "search_evaluations": p.search.n_evaluations,
            "search_rows": p.search.rows,
            "search_latency_lookups": p.search.constraint_rows,
            "search_restarts": p.search.restarts,
            "search_uniform_rows": p.search.uniform_rows,
            "search_seconds": round(p.search.seconds, 3),
        }
        if real_accuracy is not None:
            d["real_accuracy"] = real_accuracy[i]
            d["prediction_error_pp"] = 100.0 * (p.accuracy - real_accuracy[i])
        picks.append(d)
    return {
        "target": target,
        **search_summary(result, real_accuracy),
        "hv_reference": {"accuracy": result.hv_reference[0], "latency_ms": result.hv_reference[1]},
        "latency_range_ms": [result.latency_range.low.value, result.latency_range.high.value],
        "random_samples": len(result.samples_x),
        "latency_rows": result.latency_rows,
        # With n_evaluations (distinct) and seconds above: the latency lookups and the budget.
        "latency_lookups": result.latency_rows,
        "max_evaluations": result.max_evaluations,
        "selected": picks,
    }


def search_metrics(
    result: Specialization, target: str, real_accuracy: list[float] | None = None
) -> dict[str, Any]:
    """metrics/search/<target>.json: the best pick's accuracy (measured when the picks were
    evaluated, else predicted), how many picks, and the worst budget's gain over uniform random
    search; :func:`search_details` has the rest."""
    best = real_accuracy if real_accuracy else [p.accuracy for p in result.picks]
    summary = search_summary(result, real_accuracy)
    return {
        "top1": max(best) if best else None,
        "models": len(result.picks),
        "gain_pp": summary["min_gain_over_random_pp"],
    }


def search_summary(
    result: Specialization, real_accuracy: list[float] | None = None
) -> dict[str, Any]:
    """The search's figures: front, hypervolume, distinct evaluations and rows, gain over
    random, prediction error of the evaluated picks."""
    gains = [100.0 * (p.accuracy - p.random_best_accuracy) for p in result.picks]
    out: dict[str, Any] = {
        "hypervolume": round(result.hypervolume, 6),
        "front_size": len(result.front.x),
        "n_evaluations": result.n_evaluations,
        "rows": result.rows,
        "seconds": round(result.seconds, 3),
        "min_gain_over_random_pp": round(float(np.nanmin(gains)), 4) if gains else None,
    }
    if real_accuracy:
        err = [
            abs(100.0 * (p.accuracy - r)) for p, r in zip(result.picks, real_accuracy, strict=True)
        ]
        out["mean_abs_prediction_error_pp"] = round(float(np.mean(err)), 4)
    return out
