"""The predictor's work: sample subnets, measure them (resumable), fit and select the model
(:func:`train_predictor`); the stage around it is :mod:`onceflow.predictor.stage`.

The measurement settings (``predictor`` params -> :class:`MeasureSettings`) are derived once, by
the stage, and passed both to the CSV's resume key and to the meter."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from onceflow import hostcache
from onceflow.config import PredictorConfig
from onceflow.data.prepared import PreparedData
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
from onceflow.predictor.fit import Selection, select_and_fit
from onceflow.predictor.predictor import AccuracyPredictor
from onceflow.supernet import Arch
from onceflow.supernet.supernet import WEIGHTS_FILE, Supernet
from onceflow.threads import limit_threads

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
