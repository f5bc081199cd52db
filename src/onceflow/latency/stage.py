"""The ``latency_table@<target>`` stage as one call (:func:`run`): open the supernet (and, for
int8 targets, the prepared train images the backend calibrates on), build the table
(:func:`~onceflow.latency.table.build_latency_table`) and return everything the stage writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onceflow.config import Params
from onceflow.errors import ConfigError
from onceflow.hostlock import timed_on_host
from onceflow.io import write_json_atomic
from onceflow.latency.backends import make_backend
from onceflow.latency.calibration_data import target_calibration_images
from onceflow.latency.estimator import ESTIMATOR_FILE, estimator_json
from onceflow.latency.imported import build_imported_table, read_results, read_transfer
from onceflow.latency.lut import LUT_FILE
from onceflow.latency.plot import plot_rows
from onceflow.latency.table import TableResult, build_latency_table
from onceflow.metrics import latency_headline
from onceflow.plots import latency_png
from onceflow.supernet import SearchSpace, build_layer, load_supernet

HOST_FILE = "host.json"


@dataclass(frozen=True)
class LatencyTableOutputs:
    """One target's table (``save``: latency/<T>/), its metrics and the predicted-vs-measured
    plot (PNG bytes)."""

    target: str
    table: TableResult
    plot_png: bytes

    def save(self, directory: Path) -> None:
        """lut.json, estimator.json, validation.json (the measured subnets) and host.json (the
        machine and its load while it was timed)."""
        t = self.table
        if t.lut is not None:
            write_json_atomic(directory / LUT_FILE, t.lut.to_json())
        write_json_atomic(
            directory / ESTIMATOR_FILE,
            estimator_json(t.calibration, self.target, t.measured, t.selection),
        )
        write_json_atomic(directory / "validation.json", self.table.records)
        write_json_atomic(directory / HOST_FILE, self.table.metrics["host"])

    @property
    def details(self) -> dict[str, Any]:
        return self.table.metrics

    @property
    def headline(self) -> dict[str, Any]:
        return latency_headline(self.table.metrics)

    @property
    def summary(self) -> str:
        head = ", ".join(f"{k}={v:.3g}" for k, v in self.headline.items() if isinstance(v, float))
        return f"latency table for {self.target}: {head}"

    @property
    def plot_csv(self) -> str:
        """The plot's points for ``dvc plots`` (x measured_ms, y predicted_ms)."""
        return plot_rows(self.table.records)


@dataclass(frozen=True)
class Paths:
    """Where ``latency_table@<target>`` reads."""

    target: str = field(metadata={"help": "a name under latency.targets"})
    supernet: str
    data: str
    results: str | None = field(default=None, metadata={"help": "imported timings"})
    transfer: str | None = field(default=None, metadata={"help": "a transferred LUT"})


def run(params: Params, paths: Paths) -> LatencyTableOutputs:
    """Measure, calibrate and validate the latency table of ``latency.targets.<target>`` on this
    machine; for an imported target, fit its estimator on ``paths.results`` (device_results@
    <T>'s file) instead, with the LUT in ``paths.transfer`` (its other file) as a feature
    candidate."""
    cfg, target = params.latency, paths.target
    results, transfer = paths.results, paths.transfer
    torch.set_num_threads(params.base.threads)
    supernet = load_supernet(paths.supernet).eval()
    if cfg.targets[target].timings == "imported":
        if results is None:
            raise ConfigError(f"latency_table@{target}: an imported target needs --results")
        return imported_table(
            params, target, supernet.space, Path(results), Path(transfer) if transfer else None
        )
    images = target_calibration_images(cfg.targets[target], paths.data, params.base.seed)
    backend = make_backend(cfg.targets[target], images)
    with timed_on_host(f"latency_table@{target}") as host:
        table = build_latency_table(
            supernet.space, build_layer, supernet.extract, backend, cfg, target, params.base.seed
        )
    table.metrics["host"] = host  # the machine it was timed on, and its load around the timing
    title = (
        f"{target}: within ±10% {table.metrics['within_10pct']:.0%}, "
        f"Kendall τ {table.metrics['kendall_tau']:.3f}"
    )
    return LatencyTableOutputs(target, table, latency_png(table.records, title))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.__class__.__name__}); dvc repro") from None


def imported_table(
    params: Params, target: str, space: SearchSpace, results: Path, transfer: Path | None = None
) -> LatencyTableOutputs:
    """An imported target's table: the measured-subnet estimator fit on its device timings
    (``results``), offered the LUT of the attached target in ``transfer`` where there is one."""
    t = params.latency.targets[target]
    rows = read_results(_read(results), space, source=str(results), min_rows=t.measured_subnets)
    lut = read_transfer(_read(transfer), space, str(transfer)) if transfer else None
    table = build_imported_table(space, rows, t, target, params.base.seed, lut)
    table.metrics["host"] = {"imported_from": t.results_path(target), "timed_here": False}
    title = (
        f"{target} (imported): within ±10% {table.metrics['within_10pct']:.0%}, "
        f"Kendall τ {table.metrics['kendall_tau']:.3f}"
    )
    return LatencyTableOutputs(target, table, latency_png(table.records, title))
