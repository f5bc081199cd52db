from __future__ import annotations

import numpy as np
import pytest

from onceflow.latency.calibration import Calibration, fit_calibration


def synthetic_features(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    stem = rng.uniform(0.02, 0.08, n)
    blocks = rng.uniform(0.2, 2.0, n)
    head = rng.uniform(0.03, 0.1, n)
    n_layers = rng.integers(4, 14, n).astype(float)
    return {
        "stem": stem,
        "blocks": blocks,
        "head": head,
        "n_layers": n_layers,
        "sum": stem + blocks + head + 0.01,
    }


@pytest.mark.parametrize(
    ("model", "coef"),
    [
        ("affine", (1.15, 0.04)),
        ("count", (1.1, 0.006, 0.03)),
        ("per_kind", (1.5, 1.05, 0.8, 0.004, 0.02)),
    ],
)
def test_fit_recovers_known_coefficients(model: str, coef: tuple[float, ...]) -> None:
    f = synthetic_features(40)
    truth = Calibration(
        model,
        {
            "affine": ("sum", "one"),
            "count": ("sum", "n_layers", "one"),
            "per_kind": ("stem", "blocks", "head", "n_layers", "one"),
        }[model],
        coef,
    )
    y = truth.apply(f)
    fit = fit_calibration(f, y, model)
    assert fit.model == model
    np.testing.assert_allclose(fit.coef, coef, rtol=1e-6, atol=1e-9)
    assert fit.loo_mape == pytest.approx(0.0, abs=1e-9)


def test_auto_prefers_the_generating_model_on_held_out_error() -> None:
    f = synthetic_features(60, seed=1)
    rng = np.random.default_rng(2)
    # A per-layer overhead that an affine fit of the sum cannot express, plus 1% noise.
    y = (1.1 * f["sum"] + 0.02 * f["n_layers"] + 0.01) * rng.normal(1.0, 0.01, 60)
    fit = fit_calibration(f, y, "auto")
    assert fit.model in ("count", "per_kind")
    assert fit.candidates["affine"] > fit.loo_mape
    assert fit.coef[fit.features.index("n_layers")] == pytest.approx(0.02, rel=0.2)


def test_none_is_the_plain_sum_and_json_round_trips() -> None:
    f = synthetic_features(10)
    cal = fit_calibration(f, f["sum"] * 1.1, "none")
    np.testing.assert_allclose(cal.apply(f), f["sum"])
    assert cal.loo_mape == pytest.approx(1 / 11)
    assert Calibration.from_json(cal.to_json()) == cal


def test_too_few_subnets() -> None:
    f = synthetic_features(4)
    with pytest.raises(ValueError, match="too few"):
        fit_calibration(f, f["sum"], "per_kind")
