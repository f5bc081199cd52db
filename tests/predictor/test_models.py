"""Model selection on synthetic data with a known ranking; save/load of every model kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onceflow.config import PredictorConfig
from onceflow.errors import ConfigError, DataError
from onceflow.predictor import AccuracyPredictor, ArchEncoder, load_predictor, save_predictor
from onceflow.predictor.fit import rank_metrics, select_and_fit
from onceflow.predictor.models import MODEL_KINDS, make_model
from onceflow.predictor.predictor import WEIGHTS_FILE
from onceflow.supernet import SearchSpace

FAST = PredictorConfig(mlp_epochs=150, mlp_hidden=32, gbm_iterations=80)


def fast(**selection: float) -> PredictorConfig:
    """FAST with other selection settings (k_folds, curve_points, tie_tolerance, ...)."""
    return FAST.model_copy(update=selection)


def synthetic(space: SearchSpace, n: int, interaction: bool, seed: int = 0):
    """Encoded archs and accuracies. Additive: a fixed weight per choice (a linear model's
    world). Interaction: accuracy depends on whether two dimensions agree (no additive model
    can rank it)."""
    rng = np.random.default_rng(seed)
    enc = ArchEncoder(space, derived=False)
    x = space.encode_batch([space.sample(rng) for _ in range(n)])
    X = enc.features(x)
    if interaction:
        y = 0.8 + 0.1 * (x[:, 1] == x[:, 2]) + 0.003 * rng.standard_normal(n)
    else:
        w = np.random.default_rng(99).normal(0, 0.01, X.shape[1])
        y = 0.85 + X @ w + 0.0005 * rng.standard_normal(n)
    return x, X, y


def test_additive_truth_is_ranked_well(default_space: SearchSpace) -> None:
    _, X, y = synthetic(default_space, 150, interaction=False)
    model, sel = select_and_fit(X, y, MODEL_KINDS, p=fast(k_folds=3, curve_points=3), seed=0)
    assert set(sel.holdout) == set(MODEL_KINDS) == set(sel.cv_tau)
    assert sel.model == max(sel.cv_tau, key=sel.cv_tau.get)  # chosen by k-fold tau
    assert sel.holdout[sel.model]["kendall_tau"] > 0.9
    assert sel.holdout["ridge"]["kendall_tau"] > 0.9  # the additive truth suits ridge
    assert model.kind == sel.model and sel.n_train + sel.n_holdout == 150
    # Learning curve: held-out tau per training size, growing to the full training split.
    assert [n for n, _ in sel.curve[sel.model]][-1] == sel.n_train


def test_interaction_truth_is_not_chosen_linear(tiny_space: SearchSpace) -> None:
    _, X, y = synthetic(tiny_space, 120, interaction=True)
    _, sel = select_and_fit(X, y, MODEL_KINDS, p=fast(k_folds=3, curve_points=2), seed=0)
    assert sel.model != "ridge"
    assert sel.cv_tau[sel.model] > sel.cv_tau["ridge"] + 0.2
    # Within each half of the truth only noise orders the subnets: ~0.5 is the most any model
    # reaches; ridge stays near 0.
    assert sel.holdout[sel.model]["kendall_tau"] > sel.holdout["ridge"]["kendall_tau"] + 0.2


def test_too_few_samples_is_a_clear_error(tiny_space: SearchSpace) -> None:
    p = fast(k_folds=5)
    need = p.min_samples()  # the schema's rule: the fit applies the same one
    _, X, y = synthetic(tiny_space, need, interaction=False)
    with pytest.raises(DataError, match=rf"{need - 1} samples .* \(>= {need}\)"):
        select_and_fit(X[: need - 1], y[: need - 1], ["ridge"], p=p)
    select_and_fit(X, y, ["ridge"], p=p, seed=0)  # exactly enough


def test_rank_metrics_known_values() -> None:
    m = rank_metrics(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.1, 0.2, 0.4, 0.3]))
    assert m["kendall_tau"] == pytest.approx(4 / 6)
    assert m["rmse_pp"] == pytest.approx(100 * np.sqrt(0.02 / 4))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_save_load_round_trip(tmp_path: Path, tiny_space: SearchSpace, kind: str) -> None:
    x, _, y = synthetic(tiny_space, 60, interaction=False)
    enc = ArchEncoder(tiny_space)
    pred = AccuracyPredictor(enc, make_model(kind, FAST).fit(enc.features(x), y))
    save_predictor(pred, tmp_path, {"metrics": {"kendall_tau": 1.0}})
    loaded = load_predictor(tmp_path, tiny_space)
    assert loaded.kind == kind
    np.testing.assert_allclose(loaded.predict(x), pred.predict(x), rtol=1e-6)


def test_load_refuses_other_space_and_altered_weights(
    tmp_path: Path, tiny_space: SearchSpace, default_space: SearchSpace
) -> None:
    x, _, y = synthetic(tiny_space, 30, interaction=False)
    enc = ArchEncoder(tiny_space)
    save_predictor(AccuracyPredictor(enc, make_model("ridge", FAST).fit(enc.features(x), y)),
                   tmp_path, {})  # fmt: skip
    with pytest.raises(ConfigError, match="different search space"):
        load_predictor(tmp_path, default_space)
    w = dict(np.load(tmp_path / WEIGHTS_FILE))
    w["w"] = w["w"] * 2
    np.savez(tmp_path / WEIGHTS_FILE, **w)
    with pytest.raises(DataError, match="sha256"):
        load_predictor(tmp_path, tiny_space)
    with pytest.raises(DataError, match="no predictor"):
        load_predictor(tmp_path / "nothing", tiny_space)


def test_ensemble_is_the_mean_of_its_members_and_scored_without_refits(
    tiny_space: SearchSpace,
) -> None:
    _, X, y = synthetic(tiny_space, 60, interaction=False)
    ens = make_model("ensemble", FAST).fit(X, y)
    members = [make_model(k, FAST).fit(X, y).predict(X) for k in ("mlp", "ridge", "gbm")]
    np.testing.assert_allclose(ens.predict(X), np.mean(members, axis=0), rtol=1e-6)
    _, only = select_and_fit(X, y, ["ensemble"], p=fast(k_folds=3, curve_points=2))
    _, all4 = select_and_fit(X, y, MODEL_KINDS, p=fast(k_folds=3, curve_points=2))
    assert only.cv_tau["ensemble"] == all4.cv_tau["ensemble"] and set(only.cv_tau) == {"ensemble"}


def test_ties_within_tolerance_go_to_the_fastest_model(tiny_space: SearchSpace) -> None:
    _, X, y = synthetic(tiny_space, 40, interaction=True)
    _, strict = select_and_fit(X, y, ["gbm", "ridge"], p=fast(k_folds=3, curve_points=2))
    assert strict.model == "gbm"  # ridge cannot rank the interaction
    _, loose = select_and_fit(
        X, y, ["gbm", "ridge"], p=fast(k_folds=3, curve_points=2, tie_tolerance=2.0)
    )
    assert loose.model == "ridge" and loose.cv_tau == strict.cv_tau
