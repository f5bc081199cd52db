"""Model selection by k-fold Kendall tau, held-out metrics and the learning curve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import kendalltau, spearmanr

from onceflow.errors import DataError
from onceflow.predictor.models import Model, ModelParams, make_model

log = logging.getLogger(__name__)

SPEED_ORDER = ("ridge", "mlp", "gbm")  # fastest to evaluate on a batch first


def rank_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Kendall tau, Spearman rho and RMSE (in accuracy points, i.e. percent) of predictions."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        tau = rho = 0.0  # a constant ranks nothing (scipy would warn and return nan)
    else:
        tau = kendalltau(y_true, y_pred).statistic
        rho = spearmanr(y_true, y_pred).statistic
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2))) * 100.0
    return {
        "kendall_tau": float(np.nan_to_num(tau)),
        "spearman": float(np.nan_to_num(rho)),
        "rmse_pp": rmse,
    }


def kfold_tau(kind: str, X: np.ndarray, y: np.ndarray, k: int, p: ModelParams, seed: int) -> float:
    """Mean Kendall tau over ``k`` folds (each fold's predictions against its truth)."""
    idx = np.random.default_rng(seed).permutation(len(y))
    taus = []
    for fold in np.array_split(idx, k):
        train = np.setdiff1d(idx, fold)
        m = make_model(kind, p, seed).fit(X[train], y[train])
        taus.append(rank_metrics(y[fold], m.predict(X[fold]))["kendall_tau"])
    return float(np.mean(taus))


@dataclass
class Selection:
    """What model fitting found. ``holdout`` and ``cv_tau`` have an entry per candidate kind."""

    model: str
    cv_tau: dict[str, float]
    holdout: dict[str, dict[str, float]]
    n_train: int
    n_holdout: int
    curve: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # kind -> (n, tau)


def select_and_fit(
    X: np.ndarray,
    y: np.ndarray,
    kinds: Sequence[str],
    *,
    p: ModelParams,
    k_folds: int = 5,
    holdout_fraction: float = 0.2,
    curve_points: int = 5,
    tie_tolerance: float = 0.0,
    seed: int = 0,
) -> tuple[Model, Selection]:
    """Hold out a split; choose among ``kinds`` by k-fold Kendall tau on the rest; report
    held-out metrics of every kind (fitted on the rest) and a learning curve (held-out tau vs
    training samples); return the chosen kind refitted on all samples.

    Among kinds whose k-fold tau is within ``tie_tolerance`` of the best, the one fastest to
    evaluate wins (ridge, then MLP, then gradient boosting): the search calls it millions of
    times."""
    n = len(y)
    n_hold = int(round(holdout_fraction * n))
    if n - n_hold < max(2 * k_folds, 6) or n_hold < 3:
        raise DataError(
            f"predictor: {n} samples are too few for {k_folds}-fold selection with a "
            f"{holdout_fraction:.0%} held-out split; raise predictor.n_samples (>= {4 * k_folds})"
        )
    perm = np.random.default_rng(seed).permutation(n)
    hold, train = perm[:n_hold], perm[n_hold:]
    cv, held, curve = {}, {}, {}
    sizes = sorted({int(round(f * len(train))) for f in np.linspace(0.2, 1.0, curve_points)})
    sizes = [s for s in sizes if s >= 5]
    for kind in kinds:
        cv[kind] = kfold_tau(kind, X[train], y[train], k_folds, p, seed)
        m = make_model(kind, p, seed).fit(X[train], y[train])
        held[kind] = rank_metrics(y[hold], m.predict(X[hold]))
        curve[kind] = []
        for s in sizes:
            ms = m if s == len(train) else make_model(kind, p, seed).fit(X[train[:s]], y[train[:s]])
            curve[kind].append((s, rank_metrics(y[hold], ms.predict(X[hold]))["kendall_tau"]))
        log.info(
            "predictor %s: %d-fold tau %.3f, held-out tau %.3f, rmse %.3f pp",
            kind,
            k_folds,
            cv[kind],
            held[kind]["kendall_tau"],
            held[kind]["rmse_pp"],
        )
    top = max(cv.values())
    tied = [k for k in kinds if cv[k] >= top - tie_tolerance]
    best = min(tied, key=lambda k: SPEED_ORDER.index(k) if k in SPEED_ORDER else len(SPEED_ORDER))
    final = make_model(best, p, seed).fit(X, y)
    return final, Selection(best, cv, held, len(train), n_hold, curve)
