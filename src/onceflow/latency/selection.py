"""``estimator: auto``: LUT + calibration or the measured-subnet model, chosen on held-out error.

Both are scored on the same N measured training subnets with the same k folds: the measured
model by its own cross-validated selection (:func:`~onceflow.latency.measured.fit_measured`),
the LUT by refitting its calibration on each fold's training part. The lower out-of-fold MAPE
wins; the record says both figures and the rule, so a reader sees why. The validation subnets
of the table are never used to choose, only to report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onceflow.latency.calibration import Calibration, fit_calibration
from onceflow.latency.fidelity import fidelity
from onceflow.latency.measured import (
    K_FOLDS,
    MIN_LATENCY_MS,
    ArchFeatures,
    MeasuredModel,
    _folds,
    fit_measured,
)
from onceflow.supernet.space import SearchSpace

Feats = Mapping[str, np.ndarray]
Predict = Callable[[Feats, np.ndarray], np.ndarray]


@dataclass
class Choice:
    kind: str  # "lut" | "measured"
    measured: MeasuredModel
    calibration: Calibration  # fit on all N training subnets
    selection: dict[str, Any]

    def predictors(self, space: SearchSpace) -> dict[str, Predict]:
        """name -> f(LUT features, encoded archs) -> ms, for both candidates."""
        features = ArchFeatures(space)
        model, cal = self.measured, self.calibration

        def measured(feats: Feats, encoded: np.ndarray) -> np.ndarray:
            x = features.matrix(encoded, model.feature_set, feats["sum"])
            return np.maximum(model.apply(x), MIN_LATENCY_MS)

        def lut(feats: Feats, encoded: np.ndarray) -> np.ndarray:
            return np.maximum(cal.apply(feats), MIN_LATENCY_MS)

        return {"lut": lut, "measured": measured}


def lut_cv(
    feats: Feats, measured_ms: np.ndarray, calibration_model: str, folds: list[np.ndarray]
) -> dict[str, float]:
    """Out-of-fold fidelity of the LUT with its calibration refit on each fold's training part."""
    y = np.asarray(measured_ms, dtype=np.float64)
    pred = np.empty_like(y)
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        cal = fit_calibration({n: f[train] for n, f in feats.items()}, y[train], calibration_model)
        pred[test] = cal.apply({n: f[test] for n, f in feats.items()})
    f = fidelity(np.maximum(pred, MIN_LATENCY_MS), y)
    return {k: round(float(f[k]), 4) for k in ("mape", "within_10pct", "kendall_tau")}


def choose_estimator(
    space: SearchSpace,
    encoded: np.ndarray,
    measured_ms: np.ndarray,
    *,
    feats: Feats,
    mode: str,
    calibration_model: str = "auto",
    seed: int = 0,
) -> Choice:
    """Fit both estimators on the N training subnets; ``mode`` auto picks the lower k-fold
    MAPE, ``measured`` / ``lut`` force one (both are still scored, for the record)."""
    y = np.asarray(measured_ms, dtype=np.float64)
    model = fit_measured(space, encoded, y, feats["sum"], seed=seed)
    folds = _folds(len(y), K_FOLDS, seed)
    cv_lut = lut_cv(feats, y, calibration_model, folds)
    cv_measured = model.cv["candidates"][model.cv["chosen"]]
    if mode == "auto":
        kind = "measured" if cv_measured["mape"] < cv_lut["mape"] else "lut"
        reason = (
            f"{kind}: {len(folds)}-fold CV MAPE on {len(y)} measured subnets "
            f"{min(cv_measured['mape'], cv_lut['mape']):.4f} vs "
            f"{max(cv_measured['mape'], cv_lut['mape']):.4f} "
            f"({'lut' if kind == 'measured' else 'measured'})"
        )
    else:
        kind, reason = mode, f"forced by latency.targets.<T>.estimator: {mode}"
    calibration = fit_calibration(dict(feats), y, calibration_model)
    selection = {
        "mode": mode,
        "chosen": kind,
        "reason": reason,
        "n_train": len(y),
        "cv": {"lut": cv_lut, "measured": cv_measured},
        "measured_model": model.cv["chosen"],
    }
    return Choice(kind, model, calibration, selection)
