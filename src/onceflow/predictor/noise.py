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


def label_noise(accuracy: np.ndarray, half_a: np.ndarray, half_b: np.ndarray) -> dict[str, float]:
    """``noise_pp`` (std of a label's error, accuracy points), ``signal_pp`` (std of the labels),
    ``reliability`` (share of label variance that is real) and ``tau_ceiling``; NaN-valued when
    the halves are missing or constant."""
    acc, a, b = (np.asarray(v, dtype=np.float64) for v in (accuracy, half_a, half_b))
    ok = np.isfinite(a) & np.isfinite(b)
    nan = {"noise_pp": math.nan, "signal_pp": math.nan, "reliability": math.nan}
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return {**nan, "tau_ceiling": math.nan}
    r_half = float(np.corrcoef(a[ok], b[ok])[0, 1])
    r = max(0.0, 2.0 * r_half / (1.0 + r_half)) if r_half > -1 else 0.0
    return {
        # The whole-set label is the mean of the halves: its error std is std(a - b) / 2.
        "noise_pp": float(np.std(a[ok] - b[ok]) / 2.0 * 100.0),
        "signal_pp": float(np.std(acc[ok]) * 100.0),
        "reliability": r,
        "tau_ceiling": 2.0 / math.pi * math.asin(math.sqrt(r)),
    }
