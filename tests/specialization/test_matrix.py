"""The cross-target matrix on hand-made estimators and accuracies (pure, no networks)."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.specialization import Slot, TargetPicks, cross_target, rank_correlation


def _target(space, name: str, precision: str, archs: list, scale: dict, budgets: list[float]):
    def predict(xs):
        return np.array([scale[str(a)] for a in xs])

    return TargetPicks(
        name=name,
        precision=precision,
        slots=tuple(Slot(b, a) for b, a in zip(budgets, archs, strict=True)),
        predict_ms=predict,
        validation_ms={k: v for k, v in scale.items()},
    )


def test_different_picks_show_budget_violations_and_accuracy_gains(tiny_space) -> None:
    rng = np.random.default_rng(0)
    a0, a1, b0, b1 = (tiny_space.sample(rng) for _ in range(4))
    # On host "int8", fp32's pick a1 is slow (3 ms > budget 2 ms); on "fp32" all fit.
    lat_fp32 = {str(a0): 1.0, str(a1): 2.0, str(b0): 0.9, str(b1): 1.9}
    lat_int8 = {str(a0): 1.0, str(a1): 3.0, str(b0): 0.8, str(b1): 1.7}
    acc = {("fp32", str(a)): v for a, v in ((a0, 0.80), (a1, 0.85), (b0, 0.79), (b1, 0.86))}
    acc |= {("int8", str(a)): v - 0.01 for (_, a), v in list(acc.items())}
    fp32 = _target(tiny_space, "fp32", "fp32", [a0, a1], lat_fp32, [1.0, 2.0])
    int8 = _target(tiny_space, "int8", "int8", [b0, b1], lat_int8, [1.0, 2.0])
    calls = []

    def accuracy(arch, host):
        calls.append((arch, host))
        return acc[(host, str(arch))]

    head, det = cross_target([fp32, int8], accuracy, lambda arch, host: 2.0 if arch == a1 else 1.0)
    assert not det["picks_coincide"] and det["cases"] == 4
    pair = det["pairs"]["fp32->int8"]
    assert pair["budget_violations"] == 1 and pair["max_over_budget_pct"] == pytest.approx(50.0)
    assert det["pairs"]["int8->fp32"]["budget_violations"] == 0
    cell = next(c for c in det["cells"] if c["source"] == "fp32" and c["slot"] == 1)
    assert not cell["within_budget"] and cell["specialization_gain_pp"] == pytest.approx(1.0)
    assert len(calls) == len(set(calls))  # each (arch, host) evaluated once
    assert cell["source_measured_on_host_ms"] == 2.0 and cell["host_pick_measured_ms"] == 1.0
    assert pair["measured_latency_ratio_mean"] == pytest.approx(1.5)  # slots: 1.0/1.0, 2.0/1.0
    assert "of 4 foreign picks, 1 broke the host's budget" in det["verdict"]
    # Foreign picks that met the host's budget, split by whether the host's own pick won.
    within = [c for c in det["cells"] if c["within_budget"]]
    worse = [c for c in within if c["specialization_gain_pp"] > 0]
    assert det["foreign_within_budget_less_accurate"] == len(worse)
    assert det["foreign_within_budget_as_accurate"] == len(within) - len(worse)
    tau = det["latency_rank_correlation"]["fp32|int8"]
    assert tau["n"] == 4 and tau["kendall_tau"] == pytest.approx(1.0)


def test_coinciding_picks_say_so_plainly(tiny_space) -> None:
    a = [tiny_space.min_arch(), tiny_space.max_arch()]
    lat = {str(a[0]): 1.0, str(a[1]): 2.0}
    t1 = _target(tiny_space, "x", "fp32", a, lat, [1.0, 2.0])
    t2 = _target(tiny_space, "y", "fp32", a, lat, [1.0, 2.0])
    head, det = cross_target([t1, t2], lambda arch, host: 0.9)
    assert head == {"gain_pp": 0.0}
    assert det["picks_coincide"] and "coincide" in det["verdict"]
    assert det["budget_violations"] == 0 and det["mean_specialization_gain_pp"] == 0.0
    with pytest.raises(ValueError, match="two targets"):
        cross_target([t1], lambda arch, host: 0.9)


def test_rank_correlation_needs_common_archs() -> None:
    assert rank_correlation({"a": 1.0}, {"b": 1.0}) == {
        "n": 0,
        "kendall_tau": None,
        "spearman": None,
    }
    r = rank_correlation({"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1})
    assert r["kendall_tau"] == pytest.approx(-1.0) and r["n"] == 3
