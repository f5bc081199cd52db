"""The exported tree ensemble predicts exactly what sklearn does, on both evaluation paths."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from onceflow.errors import ConfigError
from onceflow.predictor.forest import PACKED_MIN_ROWS, Forest


def fitted(n_leaves: int = 15, seed: int = 0) -> tuple[HistGradientBoostingRegressor, np.ndarray]:
    """A boosted model on mixed features: one-hot columns and continuous ones, with an
    interaction so trees grow deep."""
    rng = np.random.default_rng(seed)
    n = 400
    onehot = (rng.random((n, 12)) < 0.3).astype(np.float32)
    cont = rng.normal(size=(n, 4)).astype(np.float32)
    X = np.concatenate([onehot, cont], axis=1)
    y = np.sin(cont[:, 0] * 2) + onehot[:, 3] * cont[:, 1] + 0.3 * onehot[:, 7]
    est = HistGradientBoostingRegressor(
        max_iter=60, max_leaf_nodes=n_leaves, min_samples_leaf=3, early_stopping=False
    ).fit(X, y)
    return est, X


def fresh_rows(X: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Rows resampled from X's columns, plus exact copies of X's values (split thresholds sit
    between training values, so equal values test the <= side)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(X), size=(n, X.shape[1]))
    return np.take_along_axis(X, idx, axis=0)


@pytest.mark.parametrize("n", [1, 37, PACKED_MIN_ROWS - 1, PACKED_MIN_ROWS, 5003])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_paths_match_sklearn(n: int, dtype: type) -> None:
    est, X = fitted()
    rows = fresh_rows(X, n, seed=n).astype(dtype)
    forest = Forest.from_sklearn(est)
    np.testing.assert_allclose(forest.predict(rows), est.predict(rows), rtol=0, atol=1e-12)


def test_float32_inputs_take_the_same_side_as_sklearn_at_thresholds() -> None:
    """float32 data exactly at, just under and just over each split threshold."""
    est, X = fitted()
    forest = Forest.from_sklearn(est)
    internal = forest.left != np.arange(len(forest.left))
    rows = []
    for f, t in zip(forest.feature[internal], forest.threshold[internal], strict=True):
        for v in (np.float32(t), np.nextafter(np.float32(t), np.float32(-1e30))):
            r = X[len(rows) % len(X)].copy()
            r[f] = v
            rows.append(r)
    batch = np.stack(rows).astype(np.float32)
    assert len(batch) >= PACKED_MIN_ROWS // 4
    big = np.concatenate([batch] * (PACKED_MIN_ROWS // len(batch) + 1))
    for b in (batch[:50], big):
        np.testing.assert_allclose(forest.predict(b), est.predict(b), rtol=0, atol=1e-12)


def test_big_trees_use_wider_table_indices() -> None:
    est, X = fitted(n_leaves=300)
    forest = Forest.from_sklearn(est)
    rows = fresh_rows(X, 3000, seed=1)
    np.testing.assert_allclose(forest.predict(rows), est.predict(rows), rtol=0, atol=1e-12)


def test_state_is_plain_arrays_and_round_trips() -> None:
    est, X = fitted()
    forest = Forest.from_sklearn(est)
    buf = io.BytesIO()
    np.savez(buf, **forest.state())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        back = Forest.from_state({k: z[k] for k in z.files})
    np.testing.assert_array_equal(back.predict(X), forest.predict(X))


def test_incomplete_state_names_what_is_missing() -> None:
    state = Forest.from_sklearn(fitted()[0]).state()
    del state["roots"]
    with pytest.raises(ConfigError, match="roots"):
        Forest.from_state(state)
