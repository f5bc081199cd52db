"""How much of the measured accuracy spread is measurement noise, and the best Kendall tau any
predictor can reach against such labels.

Each subnet is evaluated on a fixed image set, so its label is its true accuracy plus an
arch-specific error: *which* images this subnet happens to get right. Two fixed random halves of
the set give two labels per subnet whose errors are independent; their correlation across
subnets is the split-half reliability, and Spearman-Brown extends it to the whole set:
``r = 2 r_half / (1 + r_half)``. A perfect predictor of the true accuracy then correlates with
the labels at ``sqrt(r)``, which for jointly normal values is a Kendall tau of
``2/pi * arcsin(sqrt(r))``: the ceiling for the held-out tau. It is an upper bound (BN
recalibration noise is shared by both halves and not counted) and an estimate (normality).
"""

from __future__ import annotations

import math

import numpy as np


def label_noise(
    accuracy: np.ndarray,
    half_a: np.ndarray,
    half_b: np.ndarray,
    retest: np.ndarray | None = None,
) -> dict[str, float]:
    """``noise_pp`` (std of a label's error, accuracy points), ``signal_pp`` (std of the labels),
    ``reliability`` (share of label variance that is real) and ``tau_ceiling``; NaN-valued when
    the halves are missing or constant.

    ``retest`` (NaN where absent) holds labels re-measured after BN calibration on another train
    subset; with >= 3 of them the calibration's noise (``bn_noise_pp``: the std of a label's
    error from calibration, ``var(label - retest) / 2``) joins the evaluation images' and the
    ceiling counts both; ``tau_ceiling_split_half`` keeps the images-only ceiling."""
    acc, a, b = (np.asarray(v, dtype=np.float64) for v in (accuracy, half_a, half_b))
    ok = np.isfinite(a) & np.isfinite(b)
    nan = {"noise_pp": math.nan, "signal_pp": math.nan, "reliability": math.nan}
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return {**nan, "tau_ceiling": math.nan}
    var = float(np.var(acc[ok]))
    # The whole-set label is the mean of the halves: its error variance is var(a - b) / 4.
    val_var = float(np.var(a[ok] - b[ok])) / 4.0
    out = {
        "noise_pp": math.sqrt(val_var) * 100.0,
        "signal_pp": math.sqrt(var) * 100.0,
        "reliability": _reliability(a[ok], b[ok]),
        "tau_ceiling": _ceiling(_reliability(a[ok], b[ok])),
    }
    if retest is not None:
        rt = np.asarray(retest, dtype=np.float64)
        has = np.isfinite(rt) & np.isfinite(acc)
        if has.sum() >= 3 and var > 0:
            bn_var = float(np.var(acc[has] - rt[has])) / 2.0
            r = max(0.0, 1.0 - (val_var + bn_var) / var)
            out.update(
                {
                    "tau_ceiling_split_half": out["tau_ceiling"],
                    "bn_noise_pp": math.sqrt(bn_var) * 100.0,
                    "noise_pp": math.sqrt(val_var + bn_var) * 100.0,
                    "reliability": r,
                    "tau_ceiling": _ceiling(r),
                    "n_retest": float(has.sum()),
                }
            )
    return out


def _reliability(a: np.ndarray, b: np.ndarray) -> float:
    r_half = float(np.corrcoef(a, b)[0, 1])
    return max(0.0, 2.0 * r_half / (1.0 + r_half)) if r_half > -1 else 0.0


def _ceiling(r: float) -> float:
    return 2.0 / math.pi * math.asin(math.sqrt(min(max(r, 0.0), 1.0)))
