"""The ``predictor`` stage as one call (:func:`run`): measure subnets of the supernet (resuming
the CSV), fit and select the accuracy predictor; plus its metrics and learning-curve plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onceflow import plots
from onceflow.config import Params
from onceflow.data.prepared import load_prepared
from onceflow.predictor.fit import rank_metrics
from onceflow.predictor.noise import label_noise
from onceflow.predictor.pipeline import (
    PredictorRun,
    measure_settings,
    measurement_context,
    train_predictor,
)
from onceflow.predictor.predictor import save_predictor
from onceflow.supernet import load_supernet
from onceflow.threads import set_threads


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


@dataclass(frozen=True)
class Paths:
    """Where the ``predictor`` stage reads (and resumes)."""

    supernet: str
    data: str
    dataset: str = field(metadata={"help": "arch,accuracy CSV (appended, resumable)"})


def run(params: Params, paths: Paths) -> PredictorOutputs:
    """The ``predictor`` stage: measure (resuming ``paths.dataset``), fit and select the
    accuracy predictor of the supernet in ``paths.supernet`` on the prepared data."""
    cfg, seed = params.predictor, params.base.seed
    set_threads(params.base.threads)
    data = load_prepared(paths.data)
    supernet = load_supernet(paths.supernet)
    settings = measure_settings(cfg, seed)
    context = measurement_context(paths.supernet, supernet, paths.data, settings)
    trained = train_predictor(
        supernet, data, cfg, seed=seed, dataset_csv=paths.dataset, context=context,
        settings=settings, workers=params.base.threads,
    )  # fmt: skip
    details = predictor_details(trained, cfg.target)
    ceiling = predictor_metrics(details)["ceiling"]
    return PredictorOutputs(trained, details, learning_curve_png(trained, ceiling))


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
