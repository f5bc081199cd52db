"""What plots/specialization.{png,csv} show: every target's picks placed on each host target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onceflow import plots

PLOT_COLUMNS = ("host", "source", "slot", "latency_ms", "accuracy")


def plot_points(details: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per point on a host's panel: the host's own picks (``source`` = ``host``) and
    every other target's picks, at their latency on the host (its estimator) and accuracy
    under the host's precision."""
    points = []
    for host in (t["name"] for t in details["targets"]):
        cells = [c for c in details["cells"] if c["host"] == host]
        own = {(c["slot"], c["host_pick_latency_ms"], c["host_pick_accuracy"]) for c in cells}
        points += [
            {"host": host, "source": host, "slot": s, "latency_ms": lat, "accuracy": acc}
            for s, lat, acc in sorted(own, key=lambda o: o[0])
        ]
        points += [
            {
                "host": host,
                "source": c["source"],
                "slot": c["slot"],
                "latency_ms": c["source_latency_on_host_ms"],
                "accuracy": c["source_accuracy_on_host"],
            }
            for c in cells
        ]
    return points


def plot_rows(details: Mapping[str, Any]) -> str:
    """plots/specialization.csv: the PNG's points for ``dvc plots`` (x latency_ms, y accuracy)."""
    return plots.rows_csv(plot_points(details), PLOT_COLUMNS)


def specialization_png(details: Mapping[str, Any], title: str) -> bytes:
    """One panel per host target: x = latency on the host, y = accuracy under the host's
    precision; the host's own picks filled, other targets' picks hollow, budgets as lines."""
    targets = [t["name"] for t in details["targets"]]
    budgets = {
        host: sorted({c["host_budget_ms"] for c in details["cells"] if c["host"] == host})
        for host in targets
    }
    return plots.specialization_png(targets, budgets, plot_points(details), title)
