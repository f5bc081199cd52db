"""Specialization on the additive toy space: picks equal the exact constrained optima, budgets
resolve from fractions, impossible budgets fail before any search, documents are complete."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.config import (
    BudgetConfig,
    EvolutionConfig,
    LatencyTarget,
    NsgaConfig,
    SearchConfig,
)
from onceflow.errors import ConfigError, SearchError
from onceflow.search import budgets_for, report, run_search, specialize
from onceflow.search.specialize import front_hypervolume
from tests.search.test_engine import acc, exact_front, lat, toy_space

QUICK = SearchConfig(
    nsga=NsgaConfig(pop_size=40, generations=30, polish_sweeps=5),
    evolution=EvolutionConfig(population=30, generations=40),
    random_samples=500,
    max_evaluations=10_000,  # exact optima: more than the default share of this small space
)


def test_picks_are_exact_optima_and_front_is_exact() -> None:
    space = toy_space()
    res = specialize(space, acc, lat, [0.25, 0.5, 1.0], "fraction", QUICK, seed=0)
    allx = space.enumerate_all()
    lo, hi = lat(allx).min(), lat(allx).max()
    assert (res.latency_range.low.value, res.latency_range.high.value) == (lo, hi)
    for p, f in zip(res.picks, [0.25, 0.5, 1.0], strict=True):
        assert p.budget == pytest.approx(lo + f * (hi - lo))
        assert p.accuracy == pytest.approx(acc(allx[lat(allx) <= p.budget]).max(), abs=1e-12)
        assert p.latency <= p.budget and p.random_best_accuracy <= p.accuracy + 1e-12
    pts = np.stack([res.front.values["latency"], res.front.values["accuracy"]], 1)
    exact = exact_front(space)
    np.testing.assert_allclose(np.unique(np.round(pts, 9), axis=0), exact)
    acc_ref = float(np.median(res.samples_accuracy))  # a typical (uniform random) candidate
    hv = front_hypervolume(exact[:, 1], exact[:, 0], res.latency_range, acc_ref)
    assert res.hypervolume == pytest.approx(hv) and hv > 0


def test_impossible_budget_fails_before_searching() -> None:
    calls = []

    def counted_acc(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return acc(x)

    with pytest.raises(SearchError, match=r"0.5 ms is infeasible.*lowest reachable value is 1 ms"):
        specialize(toy_space(), counted_acc, lat, [5.0, 0.5], "ms", QUICK, seed=0)
    assert calls == []  # only the latency range was computed


def test_run_search_from_config_and_documents() -> None:
    space = toy_space()
    cfg = SearchConfig(
        default_budgets=BudgetConfig(unit="ms", values=[6.0]),
        nsga={"pop_size": 20, "generations": 10},
        evolution={"population": 20, "generations": 10},
        random_samples=200,
        extra_objectives=["macs"],
    )
    budgets = budgets_for(cfg, {"ort-cpu": LatencyTarget()}, "ort-cpu")
    macs = lambda x: (x**2).sum(1).astype(float)  # noqa: E731
    res = run_search(
        [type("D", (), {"name": n, "choices": tuple(range(c))}) for n, c in
         zip(space.names, space.cardinalities, strict=True)],
        cfg, budgets, acc, lat, seed=1, extra={"macs": macs},
    )  # fmt: skip
    assert set(res.front.values) == {"accuracy", "latency", "macs"}
    describe = lambda x: (",".join(map(str, x)), {"idx": x.tolist()})  # noqa: E731
    sel = report.selected_doc(res, "ort-cpu", budgets, describe)["selected"]
    assert len(sel) == 1 and sel[0]["budget_ms"] == 6.0 and sel[0]["budget_unit"] == "ms"
    assert sel[0]["predicted_latency_ms"] <= 6.0
    par = report.pareto_doc(res, "ort-cpu", describe)
    assert "macs" in par["points"][0] and len(par["points"]) == len(res.front.x)
    m = report.search_metrics(res, "ort-cpu", [0.5])
    assert m == {"top1": 0.5, "models": 1, "gain_pp": m["gain_pp"]}  # headline only
    d = report.search_details(res, "ort-cpu", [0.5])
    assert d["selected"][0]["real_accuracy"] == 0.5 and d["n_evaluations"] == res.n_evaluations
    assert "mean_abs_prediction_error_pp" in d and d["min_gain_over_random_pp"] == m["gain_pp"]
    assert report.pareto_png(res, "toy", [0.5])[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="unknown target 'ort-cpu'"):
        budgets_for(cfg, {"other": LatencyTarget()}, "ort-cpu")
    own = LatencyTarget(budgets=BudgetConfig(unit="ms", values=[2.0]))
    assert budgets_for(cfg, {"ort-cpu": own}, "ort-cpu").values == [2.0]
    with pytest.raises(ConfigError, match="extra_objectives"):
        run_search([], cfg, budgets, acc, lat, seed=0)


def test_search_loop_runs_at_one_thread_whatever_the_process_allows() -> None:
    """Small-batch inference in a pool stalls under load (a worker waits for a core): every
    call the search makes runs with torch, BLAS and OpenMP at one thread, and the stage's
    limits (base.threads) come back after."""
    from onceflow.threads import pool_sizes, set_threads

    seen: list[dict[str, int]] = []

    def watched_acc(x: np.ndarray) -> np.ndarray:
        seen.append(pool_sizes())
        return acc(x)

    set_threads(2)  # a stage with base.threads: 2
    try:
        specialize(toy_space(), watched_acc, lat, [0.5], "fraction", QUICK, seed=0)
        assert seen and all(set(s.values()) == {1} for s in seen), seen[:3]
        after = pool_sizes()
        assert after["blas"] == 2 and after["torch"] == 2
    finally:
        set_threads(1)
