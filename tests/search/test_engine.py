"""The search engine on toy spaces whose Pareto front and constrained optimum are known exactly
(by enumeration of every candidate)."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.config import EvolutionConfig, NsgaConfig
from onceflow.errors import SearchError
from onceflow.search import (
    CategoricalSpace,
    Objective,
    accuracy_latency_hv,
    check_budget,
    constrained_evolution,
    coordinate_descent,
    hypervolume,
    non_dominated,
    nsga2,
    random_search,
    resolve_budget,
    value_range,
)

CARD = (4, 4, 4, 4, 4, 4, 3, 3)
# Additive toy: latency = 1 + sum of indices; accuracy = sum_d w_d * sqrt(x_d) (concave gains).
W = np.array([0.9, 0.7, 0.5, 0.35, 0.2, 0.6, 0.45, 0.8])


def toy_space() -> CategoricalSpace:
    return CategoricalSpace(tuple(f"d{i}" for i in range(len(CARD))), CARD)


def lat(x: np.ndarray) -> np.ndarray:
    return 1.0 + x.sum(axis=1).astype(np.float64)


def acc(x: np.ndarray) -> np.ndarray:
    return (np.sqrt(x) * W).sum(axis=1)


def exact_front(space: CategoricalSpace) -> np.ndarray:
    """(lat, acc) of the true Pareto front, by enumeration."""
    allx = space.enumerate_all()
    F = np.stack([-acc(allx), lat(allx)], 1)
    idx = non_dominated(F)
    return np.unique(np.round(np.stack([lat(allx[idx]), acc(allx[idx])], 1), 9), axis=0)


def test_non_dominated_matches_brute_force() -> None:
    F = np.random.default_rng(1).integers(0, 6, (200, 2)).astype(float)
    brute = [
        i
        for i in range(len(F))
        if not any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in range(len(F)))
    ]
    got = non_dominated(F)
    assert sorted({tuple(F[i]) for i in got}) == sorted({tuple(F[i]) for i in brute})
    assert len(got) == len({tuple(F[i]) for i in brute})  # duplicates kept once


def test_nsga2_recovers_exact_pareto_front() -> None:
    space = toy_space()
    front = nsga2(
        space,
        [Objective("accuracy", acc, maximize=True), Objective("latency", lat)],
        NsgaConfig(pop_size=40, generations=30),
        seed=3,
    )
    got = np.unique(
        np.round(np.stack([front.values["latency"], front.values["accuracy"]], 1), 9), axis=0
    )
    np.testing.assert_allclose(got, exact_front(space))
    assert front.n_evaluations < space.size() / 5 and front.x.dtype == np.int64
    # Values reported are the objective values of the rows reported.
    np.testing.assert_allclose(acc(front.x), front.values["accuracy"])


def test_nsga2_three_objectives_front_is_non_dominated() -> None:
    space = toy_space()
    flops = lambda x: (x[:, :3] ** 2).sum(axis=1).astype(float)  # noqa: E731
    front = nsga2(
        space,
        [Objective("accuracy", acc, True), Objective("latency", lat), Objective("flops", flops)],
        NsgaConfig(pop_size=40, generations=20),
        seed=0,
    )
    F = np.stack([-front.values["accuracy"], front.values["latency"], front.values["flops"]], 1)
    assert len(non_dominated(F)) == len(F) > 5


@pytest.mark.parametrize("budget", [2.0, 5.0, 9.0, 17.0])
def test_constrained_evolution_finds_exact_optimum(budget: float) -> None:
    """The exact optimum (40 generations, then what the polish left), every seed where the
    feasible set is small;
    where nearly everything is feasible (17: 97% of the rows, the best three within 0.014)
    in several of 10 seeds, and never worse than 500 feasible random samples. (One seed's
    outcome at 17 is a matter of the generator's stream, not of the engine.)"""
    space = toy_space()
    allx = space.enumerate_all()
    ok = lat(allx) <= budget
    optimum = acc(allx[ok]).max()
    low = coordinate_descent(space, lat, space.extremes())
    rnd = random_search(space, acc, lat, budget, 500, seed=0, feasible_only=True)
    assert rnd.x is not None and rnd.fitness <= optimum + 1e-12
    assert lat(rnd.x[None])[0] <= budget
    exact = 0
    for seed in range(10):
        p = EvolutionConfig(population=30, generations=40)
        best = constrained_evolution(space, acc, lat, budget, p, seed=seed, initial=low.x[None, :])
        assert best.x is not None and lat(best.x[None])[0] <= budget
        assert best.generations <= 2 * 40 and best.fitness >= rnd.fitness  # + what polish left
        exact += best.fitness == pytest.approx(optimum, abs=1e-12)
    assert exact >= (10 if budget <= 5.0 else 8 if budget <= 9.0 else 3)


def test_coordinate_descent_exact_on_additive_and_range() -> None:
    space = toy_space()
    r = value_range(space, lat, np.random.default_rng(0))
    assert (r.low.value, r.high.value) == (1.0, 1.0 + sum(c - 1 for c in CARD))
    assert resolve_budget(0.5, "fraction", r) == pytest.approx(1.0 + 0.5 * r.span)
    assert resolve_budget(7.0, "ms", r) == 7.0


def test_impossible_budget_fails_at_once_with_lowest_reachable() -> None:
    space = toy_space()
    low = coordinate_descent(space, lat, space.extremes())
    with pytest.raises(SearchError, match=r"lowest reachable value is 1 ms \(arch 0,0,0"):
        check_budget(0.5, low, describe=lambda x: "arch " + ",".join(map(str, x)))
    check_budget(1.0, low)  # exactly reachable: fine


def test_evolution_without_feasible_seed_reports_none_when_impossible() -> None:
    space = toy_space()
    best = constrained_evolution(
        space, acc, lat, 0.5, EvolutionConfig(population=10, generations=3), seed=0
    )
    assert best.x is None and best.constraint >= 1.0


def test_canonicalize_collapses_ignored_indices() -> None:
    # d1 only matters when d0 > 0 (like a skipped block): canonical form zeroes it.
    def canon(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[x[:, 0] == 0, 1] = 0
        return x

    space = CategoricalSpace(("gate", "inner", "other"), (2, 3, 3), canonicalize=canon)
    x = space.sample(np.random.default_rng(0), 500)
    assert np.all(x[x[:, 0] == 0, 1] == 0)
    m = space.mutate(np.random.default_rng(1), x, 0.3)
    assert np.all(m[m[:, 0] == 0, 1] == 0)


def test_hypervolume_of_known_points() -> None:
    assert hypervolume(np.array([[0.5, 0.5]]), np.array([1.0, 1.0])) == pytest.approx(0.25)
    assert hypervolume(np.array([[1.5, 0.5]]), np.array([1.0, 1.0])) == 0.0
    hv = accuracy_latency_hv(np.array([0.9]), np.array([2.0]), 0.8, 4.0, 4.0)
    assert hv == pytest.approx(0.1 * 0.5)


def test_spread_sampling_covers_size_range() -> None:
    space = CategoricalSpace(tuple(f"d{i}" for i in range(60)), (3,) * 60)
    s = space.sample_spread(np.random.default_rng(0), 2000).sum(1)
    u = space.sample(np.random.default_rng(0), 2000).sum(1)
    assert s.min() < 15 and s.max() > 105  # spans most of [0, 120]
    assert u.min() > 30 and u.max() < 90  # uniform concentrates in the middle


def test_crossover_mask_two_point_rows_are_one_contiguous_run() -> None:
    """Two-point rows take one contiguous run of indices from the first parent (blocks of
    neighbouring dimensions travel together); share 0 is uniform crossover."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(9)), (4,) * 9)
    m = space.crossover_mask(np.random.default_rng(0), 2000, 1.0)
    runs = (np.diff(m.astype(np.int8), axis=1) != 0).sum(1) + m[:, 0] + m[:, -1]
    assert (runs <= 2).all()  # 0/1 edges at most: one run [lo, hi) (or none / all)
    assert 0.2 < m.mean() < 0.5  # E|[lo, hi)| / D for two sorted uniform cuts ~ 1/3
    u = space.crossover_mask(np.random.default_rng(0), 2000, 0.0)
    runs_u = (np.diff(u.astype(np.int8), axis=1) != 0).sum(1) + u[:, 0] + u[:, -1]
    assert abs(u.mean() - 0.5) < 0.02 and (runs_u > 2).mean() > 0.5


def test_evolution_ranks_equal_fitness_by_constraint() -> None:
    """On a plateau (equal fitness) the member with more of the budget left ranks first."""
    from onceflow.search.evolution import _order

    fit = np.array([0.8, 0.9, 0.9, 0.9, 0.7])
    con = np.array([1.0, 3.0, 2.0, 9.0, 0.5])  # budget 5: row 3 is infeasible
    assert _order(fit, con, 5.0).tolist() == [2, 1, 0, 4, 3]
