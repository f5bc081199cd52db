"""Model selection by k-fold Kendall tau, held-out metrics and the learning curve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import kendalltau, spearmanr

from onceflow.config import PredictorConfig
from onceflow.errors import DataError
from onceflow.predictor.models import BASE_KINDS, Model, make_model

log = logging.getLogger(__name__)

SPEED_ORDER = ("ridge", "mlp", "gbm", "ensemble")  # fastest to evaluate on a batch first


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


@dataclass(frozen=True)
class _Plan:
    """Which rows every fit uses: k folds of the training split, the held-out split, and the
    learning-curve prefixes of the training split."""

    train: np.ndarray
    hold: np.ndarray
    folds: list[np.ndarray]
    sizes: list[int]


@dataclass
class _Predictions:
    """One model kind's predictions under a plan: out-of-fold over the training split (in its
    order), on the held-out split, and on the held-out split per learning-curve size."""

    oof: np.ndarray
    hold: np.ndarray
    curve: dict[int, np.ndarray]

    @staticmethod
    def mean(parts: Sequence[_Predictions]) -> _Predictions:
        return _Predictions(
            np.mean([q.oof for q in parts], axis=0),
            np.mean([q.hold for q in parts], axis=0),
            {s: np.mean([q.curve[s] for q in parts], axis=0) for s in parts[0].curve},
        )


def _predict(
    kind: str, X: np.ndarray, y: np.ndarray, plan: _Plan, p: PredictorConfig, seed: int
) -> _Predictions:
    Xt, yt = X[plan.train], y[plan.train]
    oof = np.empty(len(plan.train))
    for fold in plan.folds:
        rest = np.setdiff1d(np.arange(len(plan.train)), fold)
        oof[fold] = make_model(kind, p, seed).fit(Xt[rest], yt[rest]).predict(Xt[fold])
    hold = make_model(kind, p, seed).fit(Xt, yt).predict(X[plan.hold])
    curve = {
        s: hold
        if s == len(Xt)
        else make_model(kind, p, seed).fit(Xt[:s], yt[:s]).predict(X[plan.hold])
        for s in plan.sizes
    }
    return _Predictions(oof, hold, curve)


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
    p: PredictorConfig,
    seed: int = 0,
) -> tuple[Model, Selection]:
    """Hold out a split; choose among ``kinds`` by the Kendall tau of k-fold out-of-fold
    predictions on the rest; report held-out metrics of every kind (fitted on the rest) and a
    learning curve (held-out tau vs training samples); return the chosen kind refitted on all
    samples.

    Among kinds whose k-fold tau is within ``tie_tolerance`` of the best, the one fastest to
    evaluate wins (ridge, then MLP, then gradient boosting, then their ensemble): the search
    calls it millions of times. The ensemble's scores come from its members' predictions.
    ``p`` gives the models' hyperparameters and k_folds, holdout_fraction, curve_points and
    tie_tolerance."""
    k_folds, holdout_fraction, tie_tolerance = p.k_folds, p.holdout_fraction, p.tie_tolerance
    curve_points = p.curve_points
    n = len(y)
    n_hold = int(round(holdout_fraction * n))
    if n - n_hold < max(2 * k_folds, 6) or n_hold < 3:
        raise DataError(
            f"predictor: {n} samples are too few for {k_folds}-fold selection with a "
            f"{holdout_fraction:.0%} held-out split; raise predictor.n_samples (>= {4 * k_folds})"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    train = perm[n_hold:]
    sizes = sorted({int(round(f * len(train))) for f in np.linspace(0.2, 1.0, curve_points)})
    plan = _Plan(
        train=train,
        hold=perm[:n_hold],
        folds=np.array_split(rng.permutation(len(train)), k_folds),
        sizes=[s for s in sizes if s >= 5],
    )
    # The ensemble is scored from its members' predictions: no model is fitted twice.
    need = [k for k in BASE_KINDS if k in kinds or "ensemble" in kinds]
    preds = {k: _predict(k, X, y, plan, p, seed) for k in need}
    if "ensemble" in kinds:
        preds["ensemble"] = _Predictions.mean([preds[k] for k in BASE_KINDS])
    y_train, y_hold = y[plan.train], y[plan.hold]
    cv, held, curve = {}, {}, {}
    for kind in kinds:
        q = preds[kind]
        # One tau over every out-of-fold prediction: on ~100 subnets far steadier than the
        # mean of per-fold taus on ~20 each (which flipped the choice between runs).
        cv[kind] = rank_metrics(y_train, q.oof)["kendall_tau"]
        held[kind] = rank_metrics(y_hold, q.hold)
        curve[kind] = [(s, rank_metrics(y_hold, q.curve[s])["kendall_tau"]) for s in plan.sizes]
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
