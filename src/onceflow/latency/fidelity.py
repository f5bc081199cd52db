"""How well predicted latencies match measured ones: the figures every table reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def fidelity(
    predicted_ms: Sequence[float] | np.ndarray,
    measured_ms: Sequence[float] | np.ndarray,
    measured_cv: Sequence[float] | np.ndarray | None = None,
) -> dict[str, float | int]:
    """mape (mean |p-m|/m), within_10pct (share with |p-m|/m <= 0.1), kendall_tau, spearman,
    max_abs_rel_err, and noise_cv: the median relative spread of the repeated measurements
    themselves (robust CV per item), the floor any estimator faces."""
    p = np.asarray(predicted_ms, dtype=np.float64)
    m = np.asarray(measured_ms, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1 or p.size < 2:
        raise ValueError(
            f"need two equal 1-d arrays of >= 2 latencies, got {p.shape} and {m.shape}"
        )
    rel = np.abs(p - m) / m
    tau = stats.kendalltau(p, m).statistic
    rho = stats.spearmanr(p, m).statistic
    out: dict[str, float | int] = {
        "n_validation": int(p.size),
        "mape": float(rel.mean()),
        "within_10pct": float((rel <= 0.10).mean()),
        "within_5pct": float((rel <= 0.05).mean()),
        "max_abs_rel_err": float(rel.max()),
        "kendall_tau": float(tau) if not math.isnan(tau) else 0.0,
        "spearman": float(rho) if not math.isnan(rho) else 0.0,
    }
    if measured_cv is not None:
        out["noise_cv"] = float(np.median(np.asarray(measured_cv, dtype=np.float64)))
    return out
