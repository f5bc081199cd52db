"""The ``specialize_report`` stage as one call (:func:`run`): every target's picks on every
other target (:func:`~onceflow.specialization.report.specialization_report`) and its plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceflow.config import Params
from onceflow.data.prepared import load_prepared
from onceflow.hostlock import timed_on_host
from onceflow.specialization.plot import plot_rows, specialization_png
from onceflow.specialization.report import specialization_report
from onceflow.supernet import load_supernet
from onceflow.threads import set_threads


@dataclass(frozen=True)
class SpecializationOutputs:
    """What the ``specialize_report`` stage writes: the metrics and the plot (PNG bytes)."""

    headline: dict[str, Any]
    details: dict[str, Any]
    plot_png: bytes

    @property
    def summary(self) -> str:
        return f"specialization: {self.details['verdict']}"

    @property
    def plot_csv(self) -> str:
        """The plot's points for ``dvc plots`` (x latency_ms, y accuracy)."""
        return plot_rows(self.details)


@dataclass(frozen=True)
class Paths:
    """Where ``specialize_report`` reads: the supernet, the data and every target's latency
    table, search and packages (one folder each, a subfolder per target)."""

    supernet: str
    data: str
    latency: str
    search: str
    artifacts: str


def run(params: Params, paths: Paths) -> SpecializationOutputs:
    """:func:`specialization_report` on the supernet and prepared data on disk, with its plot."""
    set_threads(params.base.threads)
    with timed_on_host("specialize_report") as host:
        headline, details = specialization_report(
            params,
            load_supernet(paths.supernet).eval(),
            load_prepared(paths.data),
            latency_root=Path(paths.latency),
            search_root=Path(paths.search),
            artifacts_root=Path(paths.artifacts),
        )
    details["host"] = host
    return SpecializationOutputs(headline, details, specialization_png(details, details["verdict"]))
