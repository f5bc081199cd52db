"""Calibration: map LUT sums to end-to-end latency, fitted on K measured subnets.

An isolated layer timed alone pays a whole inference call (dispatch, input/output handling)
that it does not pay inside a network, and a network pays things no layer pays alone; both are
systematic, so a small linear model over per-arch LUT features absorbs them. Models (features
in :data:`FEATURES`):

* ``none``     -- the plain LUT sum (what Once-for-All does);
* ``affine``   -- a * sum + c;
* ``count``    -- a * sum + d * n_layers + c (a per-layer correction: overhead paid per op);
* ``per_kind`` -- a_stem * stem + a_block * blocks + a_head * head + d * n_layers + c.

Fits minimize *relative* squared error (rows weighted by 1/measured), matching MAPE and the
±10% criterion. ``auto`` picks the model with the lowest leave-one-out MAPE, computed in closed
form from the hat matrix, so the choice is made on held-out error, not on fit error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Per-arch features the estimator computes (vectorized) from the LUT.
FEATURE_NAMES = ("sum", "stem", "blocks", "head", "n_layers", "one")
FEATURES: dict[str, tuple[str, ...]] = {
    "none": ("sum",),
    "affine": ("sum", "one"),
    "count": ("sum", "n_layers", "one"),
    "per_kind": ("stem", "blocks", "head", "n_layers", "one"),
}
AUTO_CANDIDATES = ("affine", "count", "per_kind")


@dataclass(frozen=True)
class Calibration:
    """prediction = features[names] @ coef (ms)."""

    model: str
    features: tuple[str, ...]
    coef: tuple[float, ...]
    loo_mape: float | None = None  # leave-one-out MAPE on the calibration subnets
    fit_mape: float | None = None
    candidates: Mapping[str, float] | None = None  # model -> LOO MAPE, for the record

    def apply(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.zeros_like(np.asarray(feats["sum"], dtype=np.float64))
        for name, c in zip(self.features, self.coef, strict=True):
            out = out + (c if name == "one" else c * feats[name])
        return out

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "features": list(self.features),
            "coef": list(self.coef),
            "loo_mape": self.loo_mape,
            "fit_mape": self.fit_mape,
            "candidates": dict(self.candidates) if self.candidates else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> Calibration:
        return cls(
            model=str(d["model"]),
            features=tuple(d["features"]),
            coef=tuple(float(c) for c in d["coef"]),
            loo_mape=d.get("loo_mape"),
            fit_mape=d.get("fit_mape"),
            candidates=d.get("candidates"),
        )


def design(feats: Mapping[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """(N, len(names)) design matrix; ``one`` may be absent from ``feats``."""
    n = len(np.asarray(feats["sum"]))
    cols = [np.ones(n) if k == "one" else np.asarray(feats[k], dtype=np.float64) for k in names]
    return np.stack(cols, axis=1)


def fit_linear(
    x: np.ndarray, y: np.ndarray, relative: bool = True
) -> tuple[np.ndarray, float, float]:
    """Least squares y ~ x @ coef (rows weighted by 1/y when ``relative``).

    Returns (coef, fit MAPE, leave-one-out MAPE). The LOO residual of weighted least squares is
    r_i / (1 - h_ii) with h the hat matrix of the weighted design.
    """
    w = 1.0 / y if relative else np.ones_like(y)
    xw, yw = x * w[:, None], y * w
    coef, *_ = np.linalg.lstsq(xw, yw, rcond=None)
    resid = yw - xw @ coef
    pinv = np.linalg.pinv(xw)
    h = np.einsum("ij,ji->i", xw, pinv)
    loo = resid / np.clip(1.0 - h, 1e-9, None)
    # resid is in weighted units; convert back to relative error of the prediction.
    scale = (1.0 / w) / y
    fit_mape = float(np.mean(np.abs(resid * scale)))
    loo_mape = float(np.mean(np.abs(loo * scale)))
    return coef, fit_mape, loo_mape


def fit_calibration(
    feats: Mapping[str, np.ndarray], measured_ms: np.ndarray, model: str = "auto"
) -> Calibration:
    """Fit ``model`` (or pick the best by LOO MAPE for ``auto``) to the measured latencies."""
    y = np.asarray(measured_ms, dtype=np.float64)
    if model == "none":
        x = design(feats, FEATURES["none"])[:, 0]
        mape = float(np.mean(np.abs(x - y) / y))
        return Calibration("none", FEATURES["none"], (1.0,), loo_mape=mape, fit_mape=mape)
    names = AUTO_CANDIDATES if model == "auto" else (model,)
    if any(n not in FEATURES for n in names):
        raise ValueError(
            f"unknown calibration model {model!r}; choose auto or one of {list(FEATURES)}"
        )
    fits = {}
    for name in names:
        x = design(feats, FEATURES[name])
        if x.shape[0] <= x.shape[1]:
            continue  # too few subnets for this many parameters
        fits[name] = fit_linear(x, y)
    if not fits:
        raise ValueError(f"{len(y)} calibration subnets are too few for model {model!r}")
    best = min(fits, key=lambda k: fits[k][2])
    coef, fit_mape, loo_mape = fits[best]
    return Calibration(
        model=best,
        features=FEATURES[best],
        coef=tuple(float(c) for c in coef),
        loo_mape=loo_mape,
        fit_mape=fit_mape,
        candidates={k: v[2] for k, v in fits.items()},
    )
