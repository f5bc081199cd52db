"""Pareto fronts and hypervolume. Internally every objective is minimized; callers flip signs of
maximized objectives (accuracy) before and after."""

from __future__ import annotations

import numpy as np


def non_dominated(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``F`` ((N, M), minimized), duplicates kept once,
    ordered by the first objective."""
    F = np.asarray(F, dtype=np.float64)
    if len(F) == 0:
        return np.zeros(0, np.int64)
    if F.shape[1] == 2:
        # Sort by f0 then f1; a point is on the front iff its f1 beats every earlier point's.
        order = np.lexsort((F[:, 1], F[:, 0]))
        f1 = F[order, 1]
        prev_min = np.minimum.accumulate(np.concatenate([[np.inf], f1[:-1]]))
        return order[f1 < prev_min]
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    idx = NonDominatedSorting().do(F, only_non_dominated_front=True)
    _, first = np.unique(F[idx], axis=0, return_index=True)
    idx = idx[np.sort(first)]
    return idx[np.argsort(F[idx, 0], kind="stable")]


def hypervolume(F: np.ndarray, ref_point: np.ndarray) -> float:
    """Hypervolume dominated by ``F`` (minimized) up to ``ref_point`` (pymoo's indicator).
    Points not strictly better than the reference point in every objective add nothing."""
    F = np.asarray(F, dtype=np.float64)
    ref = np.asarray(ref_point, dtype=np.float64)
    F = F[np.all(ref > F, axis=1)]
    if len(F) == 0:
        return 0.0
    if F.shape[1] == 2:  # exact: slabs between consecutive front points sorted by f0
        P = F[non_dominated(F)]  # f0 ascending, f1 descending
        right = np.concatenate([P[1:, 0], [ref[0]]])
        return float(np.sum((right - P[:, 0]) * (ref[1] - P[:, 1])))
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(F))


def accuracy_latency_hv(
    accuracy: np.ndarray, latency: np.ndarray, acc_ref: float, lat_ref: float, lat_scale: float
) -> float:
    """Hypervolume of (accuracy up, latency down) points, normalized so that the box from
    (acc_ref, lat_ref) to (acc_ref + 1, lat_ref - lat_scale) has volume 1. Accuracies are in
    [0, 1]; pass ``acc_ref`` below the lowest accuracy of interest, ``lat_ref`` above the
    highest latency and ``lat_scale`` the latency range."""
    F = np.stack([acc_ref - np.asarray(accuracy), (np.asarray(latency) - lat_ref) / lat_scale], 1)
    return hypervolume(F, np.zeros(2))
