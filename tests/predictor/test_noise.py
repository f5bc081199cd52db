"""Label-noise estimate: split-half reliability and the Kendall-tau ceiling, on synthetic labels
with a known truth."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import kendalltau

from onceflow.predictor.noise import label_noise


def noisy_halves(n_archs: int, noise_half: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = 0.85 + 0.015 * rng.standard_normal(n_archs)
    a = truth + noise_half * rng.standard_normal(n_archs)
    b = truth + noise_half * rng.standard_normal(n_archs)
    return truth, a, b


def test_noise_and_ceiling_match_the_simulated_truth() -> None:
    truth, a, b = noisy_halves(4000, noise_half=0.006)
    acc = (a + b) / 2
    got = label_noise(acc, a, b)
    assert math.isclose(got["noise_pp"], 0.6 / math.sqrt(2), rel_tol=0.05)
    # The ceiling is the tau of the truth itself against the labels.
    assert abs(got["tau_ceiling"] - kendalltau(truth, acc).statistic) < 0.02
    assert 0.0 < got["reliability"] < 1.0


def test_less_noise_raises_the_ceiling_and_missing_halves_give_nan() -> None:
    noisy = label_noise(*_acc_and_halves(0.01))
    clean = label_noise(*_acc_and_halves(0.001))
    assert clean["tau_ceiling"] > noisy["tau_ceiling"] + 0.1
    nan = np.full(10, np.nan)
    assert all(math.isnan(v) for v in label_noise(np.linspace(0, 1, 10), nan, nan).values())


def _acc_and_halves(noise_half: float):
    _, a, b = noisy_halves(500, noise_half, seed=1)
    return (a + b) / 2, a, b


def test_retest_adds_the_calibration_noise_the_halves_cannot_see() -> None:
    """A per-subnet calibration error shared by both halves is invisible to split-half; a
    retest with an independent calibration reveals it, and the ceiling then matches the truth."""
    rng = np.random.default_rng(3)
    n = 4000
    truth = 0.85 + 0.015 * rng.standard_normal(n)
    bn, bn2 = 0.008 * rng.standard_normal(n), 0.008 * rng.standard_normal(n)
    a = truth + bn + 0.004 * rng.standard_normal(n)
    b = truth + bn + 0.004 * rng.standard_normal(n)
    acc = (a + b) / 2
    retest = acc - bn + bn2  # the same evaluation images: only the calibration differs
    retest[n // 2 :] = np.nan  # only some subnets are retested
    plain = label_noise(acc, a, b)
    got = label_noise(acc, a, b, retest)
    real = kendalltau(truth, acc).statistic
    assert plain["tau_ceiling"] > real + 0.05  # split-half alone is too optimistic here
    assert abs(got["tau_ceiling"] - real) < 0.03
    assert math.isclose(got["bn_noise_pp"], 0.8, rel_tol=0.1) and got["n_retest"] == n // 2
    assert got["tau_ceiling_split_half"] == plain["tau_ceiling"]
