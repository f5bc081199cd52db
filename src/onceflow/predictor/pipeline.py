"""The predictor stage's work as one call (:func:`run_predictor`): sample subnets, measure them
(resumable), fit and select the model; plus its metrics document and learning-curve plot.

The measurement settings (``predictor`` params -> :class:`MeasureSettings`) are derived once, by
:func:`run_predictor`, and passed both to the CSV's resume key and to the meter."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onceflow import hostcache, plots
from onceflow.config import Params, PredictorConfig
from onceflow.data.prepared import PreparedData, load_prepared
from onceflow.environment import installed_versions, stage_libraries
from onceflow.identity import LIBRARY_ROOTS, code_digest
from onceflow.io import sha256_file
from onceflow.predictor.dataset import (
    Measurement,
    MeasureSettings,
    MeterPool,
    SubnetMeter,
    build_dataset,
    context_digest,
    data_digest,
    sample_archs,
)
from onceflow.predictor.encoding import ArchEncoder
from onceflow.predictor.fit import Selection, rank_metrics, select_and_fit
from onceflow.predictor.noise import label_noise
from onceflow.predictor.predictor import AccuracyPredictor, save_predictor
from onceflow.supernet import Arch
from onceflow.supernet.supernet import WEIGHTS_FILE, Supernet, load_supernet
from onceflow.threads import limit_threads, set_threads

log = logging.getLogger(__name__)


def measure_settings(cfg: PredictorConfig, seed: int) -> MeasureSettings:
    """How a subnet's accuracy is measured under ``cfg`` (the predictor's labels, and the search
    stage's check of its picks)."""
    return MeasureSettings(
        cfg.calib_images, cfg.eval_images, cfg.batch_size, seed, cfg.calib_batch_size, cfg.retest
    )


def subnet_accuracy(
    supernet: Supernet, data: PreparedData, cfg: PredictorConfig, seed: int
) -> Callable[[Arch], float]:
    """arch -> its accuracy measured exactly as the predictor's labels are (BN recalibrated,
    the same val subset): how the search stage checks its picks."""
    return SubnetMeter(supernet, data, measure_settings(cfg, seed))


# The module that measures a label (SubnetMeter: BN recalibration, input resizing, evaluation);
# its import closure inside onceflow is the measuring code.
MEASURING_MODULE = "onceflow.predictor.dataset"


def measuring_code(roots: Mapping[str, Path] = LIBRARY_ROOTS) -> str:
    """Digest of the measuring code (the import closure of :data:`MEASURING_MODULE`) and the
    versions of the libraries the predictor stage uses (torch, numpy)."""
    versions = installed_versions(stage_libraries("predictor"))
    return code_digest(MEASURING_MODULE, roots, extra=str(sorted(versions.items())))


def measurement_context(
    supernet_dir: str | os.PathLike[str],
    supernet: Supernet,
    data_dir: str | os.PathLike[str],
    settings: MeasureSettings,
    code: str | None = None,
) -> str:
    """Fingerprint of the supernet weights (sha256), space, the prepared data's content hash,
    every measurement setting, and the measuring code and library versions (``code``, default
    :func:`measuring_code`): the CSV's resume key. Rows of another context are remeasured."""
    return context_digest(
        {
            "weights": sha256_file(Path(supernet_dir) / WEIGHTS_FILE),
            "space": supernet.space.to_json(),
            "data": data_digest(data_dir),
            "settings": asdict(settings),
            "code": measuring_code() if code is None else code,
        }
    )


def labels(measured: list[Measurement], target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) training labels, (N, 2) their values on the two evaluation halves and (N,) on the
    BN-calibration retest (NaN where none).

    ``accuracy``: the measured accuracy. ``loss``: accuracy predicted from the mean
    cross-entropy by a least-squares line over the measured subnets (the halves mapped by the
    same line), so the label is in accuracy units but carries the loss's lower noise."""
    acc = np.array([m.accuracy for m in measured])
    if target == "accuracy":
        halves = np.array([(m.accuracy_a, m.accuracy_b) for m in measured]).reshape(-1, 2)
        return acc, halves, np.array([m.accuracy_r for m in measured])
    loss = np.array([m.loss for m in measured])
    halves = np.array([(m.loss_a, m.loss_b) for m in measured]).reshape(-1, 2)
    retest = np.array([m.loss_r for m in measured])
    slope, icept = np.polyfit(loss, acc, 1) if np.ptp(loss) > 0 else (0.0, float(acc.mean()))
    return icept + slope * loss, icept + slope * halves, icept + slope * retest


@dataclass(frozen=True)
class PredictorRun:
    predictor: AccuracyPredictor
    selection: Selection
    archs: list[Arch]
    accuracy: np.ndarray  # measured
    halves: np.ndarray  # (N, 2) accuracy on the two fixed halves of the evaluation images
    y: np.ndarray  # the training labels (cfg.target)
    y_halves: np.ndarray  # (N, 2) the labels on the halves
    y_retest: np.ndarray  # (N,) the labels after the BN-calibration retest (NaN where none)
    acc_retest: np.ndarray  # (N,) measured accuracy after the retest (NaN where none)
    seconds_measure: float
    seconds_fit: float


def measure_subnets(
    supernet: Supernet,
    data: PreparedData,
    archs: list[Arch],
    *,
    settings: MeasureSettings,
    dataset_csv: str | os.PathLike[str],
    context: str,
    workers: int,
    retest: int,
) -> tuple[list[Arch], list[Measurement]]:
    """Measure ``archs`` (resuming ``dataset_csv`` rows of ``context``, and this machine's rows
    of it in the onceflow cache), ``workers`` at a time,
    each on its own copy of the supernet at one thread (torch, BLAS, OpenMP): n single-threaded
    meters keep n cores busy. The first ``retest`` archs are measured twice."""
    nets = [supernet] + [copy.deepcopy(supernet) for _ in range(workers - 1)]
    meters = MeterPool([SubnetMeter(net.eval(), data, settings) for net in nets])
    again = {str(a) for a in archs[:retest]}  # the first few, min and max included
    store = hostcache.predictor_rows_dir() / f"{context}.csv"  # outlives any workspace
    hostcache.prune_siblings(store)
    with limit_threads(1 if workers > 1 else torch.get_num_threads()):
        return build_dataset(
            archs,
            lambda a: meters.measure(a, str(a) in again),
            dataset_csv,
            context,
            workers,
            store=store,
        )


def train_predictor(
    supernet: Supernet,
    data: PreparedData,
    cfg: PredictorConfig,
    *,
    seed: int,
    dataset_csv: str | os.PathLike[str],
    context: str,
    settings: MeasureSettings,
    workers: int = 1,
) -> PredictorRun:
    """Measure ``cfg.n_samples`` subnets with ``settings`` (resuming ``dataset_csv`` rows of
    ``context``, and this machine's rows of it in the onceflow cache; ``workers`` at a time,
    each on its own copy of the supernet), then fit, select, refit."""
    space = supernet.space
    archs = sample_archs(space, cfg.n_samples, seed)
    t0 = time.perf_counter()
    archs, measured = measure_subnets(
        supernet, data, archs, settings=settings, dataset_csv=dataset_csv, context=context,
        workers=workers, retest=cfg.retest,
    )  # fmt: skip
    acc = np.array([m.accuracy for m in measured])
    halves = np.array([(m.accuracy_a, m.accuracy_b) for m in measured]).reshape(-1, 2)
    y, y_halves, y_retest = labels(measured, cfg.target)
    acc_retest = np.array([m.accuracy_r for m in measured])
    t1 = time.perf_counter()
    encoder = ArchEncoder(
        space, derived=cfg.derived_features, per_resolution=cfg.per_resolution_features
    )
    X = encoder.features(space.encode_batch(archs))
    model, sel = select_and_fit(X, y, cfg.models, p=cfg, seed=seed)
    t2 = time.perf_counter()
    log.info(
        "predictor: chose %s (held-out tau %.3f)", sel.model, sel.holdout[sel.model]["kendall_tau"]
    )
    return PredictorRun(
        AccuracyPredictor(encoder, model), sel, archs, acc, halves, y, y_halves, y_retest,
        acc_retest, t1 - t0, t2 - t1,
    )  # fmt: skip


@dataclass(frozen=True)
class PredictorOutputs:
    """What the predictor stage writes: the model (``save``: models/predictor/), the metrics
    and the learning-curve plot (PNG bytes)."""

    run: PredictorRun
    details: dict[str, Any]
    plot_png: bytes

    @property
    def headline(self) -> dict[str, Any]:
        return predictor_metrics(self.details)

    @property
    def plot_csv(self) -> str:
        """The plot's data for ``dvc plots``: :func:`plot_rows`."""
        return plot_rows(self.run)

    def save(self, directory: Path) -> None:
        save_predictor(self.run.predictor, directory, {"metrics": self.headline})

    @property
    def summary(self) -> str:
        d, ceiling = self.details, self.headline["ceiling"]
        return (
            f"predictor {d['model']}: held-out Kendall tau {d['kendall_tau']:.3f} on "
            f"{d['n_holdout']} subnets (label-noise ceiling "
            f"{'n/a' if ceiling is None else f'{ceiling:.3f}'})"
        )


def run_predictor(
    params: Params,
    supernet_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    dataset_csv: str | os.PathLike[str],
) -> PredictorOutputs:
    """The ``predictor`` stage: measure (resuming ``dataset_csv``), fit and select the accuracy
    predictor of the supernet in ``supernet_dir`` on the prepared data in ``data_dir``."""
    cfg, seed = params.predictor, params.base.seed
    set_threads(params.base.threads)
    data = load_prepared(data_dir)
    supernet = load_supernet(supernet_dir)
    settings = measure_settings(cfg, seed)
    context = measurement_context(supernet_dir, supernet, data_dir, settings)
    run = train_predictor(
        supernet, data, cfg, seed=seed, dataset_csv=dataset_csv, context=context,
        settings=settings, workers=params.base.threads,
    )  # fmt: skip
    details = predictor_details(run, cfg.target)
    ceiling = predictor_metrics(details)["ceiling"]
    return PredictorOutputs(run, details, learning_curve_png(run, ceiling))


def predictor_details(run: PredictorRun, target: str) -> dict[str, Any]:
    """metrics/predictor.details.json: every model's numbers, the label noise of the target
    and of the measured accuracy, the learning curve (if any), timings."""
    sel = run.selection
    chosen = sel.holdout[sel.model]
    hold_acc = run.accuracy[sel.hold_index]
    noise = label_noise(run.y, run.y_halves[:, 0], run.y_halves[:, 1], run.y_retest)
    noise_acc = label_noise(run.accuracy, run.halves[:, 0], run.halves[:, 1], run.acc_retest)
    return {
        "n_samples": len(run.archs),
        "model": sel.model,
        "target": target,
        "kendall_tau": chosen["kendall_tau"],
        # The chosen model's held-out predictions ranked against measured accuracy (with
        # target "accuracy" the same as kendall_tau).
        "kendall_tau_vs_accuracy": rank_metrics(hold_acc, sel.hold_pred[sel.model])["kendall_tau"],
        "spearman": chosen["spearman"],
        "rmse": chosen["rmse_pp"] / 100.0,  # accuracy units (fraction)
        "rmse_pp": chosen["rmse_pp"],
        "n_train": sel.n_train,
        "n_holdout": sel.n_holdout,
        "accuracy_range": [float(run.accuracy.min()), float(run.accuracy.max())],
        # Measurement noise of the labels and the held-out tau a perfect predictor would reach.
        "label_noise": {k: _finite(v) for k, v in noise.items()},
        "label_noise_accuracy": {k: _finite(v) for k, v in noise_acc.items()},
        "cv_kendall_tau": sel.cv_tau,
        "holdout": sel.holdout,
        "learning_curve": {k: [[n, t] for n, t in v] for k, v in sel.curve.items()},
        "seconds_measure": round(run.seconds_measure, 2),
        "seconds_fit": round(run.seconds_fit, 2),
    }


def predictor_metrics(details: dict[str, Any]) -> dict[str, Any]:
    """metrics/predictor.json: the held-out tau and the tau the labels allow (the rest of
    :func:`predictor_details` stays in the details file)."""
    return {"kendall_tau": details["kendall_tau"], "ceiling": details["label_noise"]["tau_ceiling"]}


def _finite(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


def holdout_points(run: PredictorRun) -> list[dict[str, Any]]:
    """The chosen model's held-out subnets: label and prediction, in accuracy %."""
    sel = run.selection
    y, pred = 100 * run.y[sel.hold_index], 100 * sel.hold_pred[sel.model]
    return [
        {"model": sel.model, "label_pct": float(a), "predicted_pct": float(b)}
        for a, b in zip(y, pred, strict=True)
    ]


def plot_rows(run: PredictorRun) -> str:
    """The predictor plot's data for ``dvc plots``: the chosen model's held-out predictions
    against their labels (x label_pct, y predicted_pct) -- the PNG itself when no learning
    curve was asked for (``curve_points`` 0); the curve's taus are in the details file."""
    return plots.rows_csv(holdout_points(run), ("model", "label_pct", "predicted_pct"))


def learning_curve_png(run: PredictorRun, tau_ceiling: float | None = None) -> bytes:
    """Held-out Kendall tau against training samples, one line per model, and the label-noise
    ceiling when known; without a learning curve, the chosen model's held-out predictions
    against their labels (PNG bytes)."""
    sel = run.selection
    if any(sel.curve.values()):
        return plots.learning_curve_png(sel.curve, sel.model, sel.n_holdout, tau_ceiling)
    pts = holdout_points(run)
    return plots.holdout_png(
        [p["label_pct"] for p in pts],
        [p["predicted_pct"] for p in pts],
        f"{sel.model}: tau {sel.holdout[sel.model]['kendall_tau']:.3f}",
        tau_ceiling,
    )
