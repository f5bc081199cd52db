"""What plots/latency/<target>.{png,csv} show: predicted vs measured latency of a table's
calibration and validation subnets (the PNG is drawn by :func:`onceflow.plots.latency_png`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onceflow import plots

PLOT_COLUMNS = ("role", "arch", "measured_ms", "predicted_ms")


def plot_rows(records: Sequence[Mapping[str, Any]]) -> str:
    """plots/latency/<target>.csv: the PNG's points for ``dvc plots`` (x measured_ms,
    y predicted_ms)."""
    return plots.rows_csv(records, PLOT_COLUMNS)
