from __future__ import annotations

import numpy as np
import pytest

from onceflow.latency.fidelity import fidelity


def test_perfect_prediction() -> None:
    m = np.array([1.0, 2.0, 3.0, 4.0])
    f = fidelity(m, m, measured_cv=[0.1, 0.2, 0.3, 0.4])
    assert f["mape"] == 0.0
    assert f["within_10pct"] == 1.0
    assert f["kendall_tau"] == pytest.approx(1.0)
    assert f["spearman"] == pytest.approx(1.0)
    assert f["noise_cv"] == pytest.approx(0.25)
    assert f["n_validation"] == 4


def test_errors_and_ranking() -> None:
    m = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.2, 1.9, 3.0, 2.9])  # +20%, -5%, 0%, -27.5%; one swapped pair (3.0 vs 2.9)
    f = fidelity(p, m)
    assert f["within_10pct"] == pytest.approx(0.5)
    assert f["mape"] == pytest.approx((0.2 + 0.05 + 0.0 + 0.275) / 4)
    assert f["kendall_tau"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant of 6 pairs
    assert "noise_cv" not in f


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="equal"):
        fidelity([1.0, 2.0], [1.0, 2.0, 3.0])
