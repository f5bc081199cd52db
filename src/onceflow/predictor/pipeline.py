"""The predictor stage's work as one call: sample subnets, measure them (resumable), fit and
select the model; plus its metrics document and learning-curve plot."""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onceflow.config import PredictorConfig
from onceflow.data.prepared import PreparedData
from onceflow.predictor.dataset import (
    MeasureSettings,
    SubnetMeter,
    build_dataset,
    context_digest,
    file_digest,
    sample_archs,
)
from onceflow.predictor.encoding import ArchEncoder
from onceflow.predictor.fit import Selection, select_and_fit
from onceflow.predictor.noise import label_noise
from onceflow.predictor.predictor import AccuracyPredictor
from onceflow.supernet import Arch
from onceflow.supernet.supernet import WEIGHTS_FILE, Supernet

log = logging.getLogger(__name__)


def measure_settings(cfg: PredictorConfig, seed: int) -> MeasureSettings:
    return MeasureSettings(cfg.calib_images, cfg.eval_images, cfg.batch_size, seed)


def measurement_context(
    supernet_dir: str | os.PathLike[str],
    supernet: Supernet,
    data: PreparedData,
    settings: MeasureSettings,
) -> str:
    """Fingerprint of supernet weights, space, data and measurement settings (CSV resume key)."""
    return context_digest(
        {
            "weights": file_digest(Path(supernet_dir) / WEIGHTS_FILE),
            "space": supernet.space.to_json(),
            "data": data.meta.to_json(),
            "settings": asdict(settings),
        }
    )


@dataclass(frozen=True)
class PredictorRun:
    predictor: AccuracyPredictor
    selection: Selection
    archs: list[Arch]
    accuracy: np.ndarray
    halves: np.ndarray  # (N, 2) accuracy on the two fixed halves of the evaluation images
    seconds_measure: float
    seconds_fit: float


def train_predictor(
    supernet: Supernet,
    data: PreparedData,
    cfg: PredictorConfig,
    *,
    seed: int,
    dataset_csv: str | os.PathLike[str],
    context: str,
) -> PredictorRun:
    """Measure ``cfg.n_samples`` subnets (resuming ``dataset_csv``), then fit, select, refit."""
    space = supernet.space
    archs = sample_archs(space, cfg.n_samples, seed)
    meter = SubnetMeter(supernet.eval(), data, measure_settings(cfg, seed))
    t0 = time.perf_counter()
    archs, measured = build_dataset(archs, meter.measure, dataset_csv, context)
    acc = np.array([m.accuracy for m in measured])
    halves = np.array([(m.accuracy_a, m.accuracy_b) for m in measured]).reshape(-1, 2)
    t1 = time.perf_counter()
    encoder = ArchEncoder(
        space, derived=cfg.derived_features, per_resolution=cfg.per_resolution_features
    )
    X = encoder.features(space.encode_batch(archs))
    model, sel = select_and_fit(
        X,
        acc,
        cfg.models,
        p=cfg,
        seed=seed,
    )
    t2 = time.perf_counter()
    log.info(
        "predictor: chose %s (held-out tau %.3f)", sel.model, sel.holdout[sel.model]["kendall_tau"]
    )
    return PredictorRun(
        AccuracyPredictor(encoder, model), sel, archs, acc, halves, t1 - t0, t2 - t1
    )


def predictor_metrics(run: PredictorRun) -> dict[str, Any]:
    """metrics/predictor.json: the chosen model's held-out numbers first, then every model's."""
    sel = run.selection
    chosen = sel.holdout[sel.model]
    noise = label_noise(run.accuracy, run.halves[:, 0], run.halves[:, 1])
    return {
        "n_samples": len(run.archs),
        "model": sel.model,
        "kendall_tau": chosen["kendall_tau"],
        "spearman": chosen["spearman"],
        "rmse": chosen["rmse_pp"] / 100.0,  # accuracy units (fraction)
        "rmse_pp": chosen["rmse_pp"],
        "n_train": sel.n_train,
        "n_holdout": sel.n_holdout,
        "accuracy_range": [float(run.accuracy.min()), float(run.accuracy.max())],
        # Measurement noise of the labels and the held-out tau a perfect predictor would reach.
        "label_noise": {k: _finite(v) for k, v in noise.items()},
        "cv_kendall_tau": sel.cv_tau,
        "holdout": sel.holdout,
        "learning_curve": {k: [[n, t] for n, t in v] for k, v in sel.curve.items()},
        "seconds_measure": round(run.seconds_measure, 2),
        "seconds_fit": round(run.seconds_fit, 2),
    }


def _finite(v: float) -> float | None:
    return None if not np.isfinite(v) else round(float(v), 4)


def learning_curve_png(sel: Selection, tau_ceiling: float | None = None) -> bytes:
    """Held-out Kendall tau against training samples, one line per model, and the label-noise
    ceiling when known (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for kind, pts in sel.curve.items():
        n, tau = zip(*pts, strict=True) if pts else ((), ())
        style = "-o" if kind == sel.model else "--o"
        ax.plot(n, tau, style, ms=3, label=f"{kind}{' (chosen)' if kind == sel.model else ''}")
    ax.axhline(0.9, c="0.5", lw=0.7, ls=":", label="target tau 0.9")
    if tau_ceiling is not None:
        ax.axhline(tau_ceiling, c="C3", lw=0.8, ls="--", label="label-noise ceiling")
    ax.set_xlabel("training subnets")
    ax.set_ylabel(f"Kendall tau on {sel.n_holdout} held-out subnets")
    ax.set_title("accuracy predictor learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
