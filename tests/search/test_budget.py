"""Evaluation budgets and the shared archive: no candidate is evaluated twice by any phase, the
budget bounds the distinct candidates, and the baselines and options do what they say."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from onceflow.config import EvolutionConfig, NsgaConfig
from onceflow.search import (
    Archive,
    CategoricalSpace,
    Objective,
    constrained_evolution,
    nsga2,
    random_search,
    specialize,
)
from tests.search.test_engine import acc, lat, toy_space


class Recorder:
    """A batch function that remembers every row it was asked, in order."""

    def __init__(self, fn) -> None:  # noqa: ANN001
        self.fn, self.rows = fn, []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.rows.extend(map(tuple, np.asarray(x).tolist()))
        return self.fn(x)

    def assert_distinct(self) -> None:
        assert len(self.rows) == len(set(self.rows)), "a candidate was evaluated twice"


def test_archive_evaluates_each_row_once_and_honours_the_budget() -> None:
    f = Recorder(lambda x: x.sum(1).astype(float))
    a = Archive({"f": f}, max_evaluations=5)
    x = np.array([[0, 1], [0, 1], [1, 1], [2, 0]])
    got = a.evaluate(x)
    assert got.ok.all() and got["f"].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert (a.n, a.rows) == (3, 4)
    got = a.evaluate(np.array([[1, 1], [3, 3], [4, 4], [5, 5]]))  # 1 known, 3 new, room for 2
    assert got.ok.tolist() == [True, True, True, False] and np.isnan(got["f"][3])
    assert (
        a.n == 5
        and a.exhausted
        and a.contains(np.array([[3, 3], [5, 5]])).tolist()
        == [
            True,
            False,
        ]
    )
    f.assert_distinct()
    assert len(a.novel(np.array([[0, 1], [9, 9], [9, 9]]))) == 1


def test_nsga2_budget_counts_distinct_candidates() -> None:
    space = toy_space()
    fa, fl = Recorder(acc), Recorder(lat)
    front = nsga2(
        space,
        [Objective("accuracy", fa, True), Objective("latency", fl)],
        pop_size=20,
        generations=1000,
        seed=0,
        max_evaluations=300,
    )
    fa.assert_distinct()
    assert front.n_evaluations == len(fa.rows) <= 300 and front.rows >= front.n_evaluations
    assert len(fa.rows) >= 290  # the budget, not the generations, ended it


def test_nsga2_mutation_prob_zero_is_honoured() -> None:
    """Without crossover, a child with mutation_prob 0 differs from its parent in exactly one
    index (the forced one); ``0.0 or default`` would change more."""
    space = toy_space()

    def children_distances(p: float) -> np.ndarray:
        f = Recorder(acc)
        nsga2(
            space,
            [Objective("accuracy", f, True), Objective("latency", lat)],
            pop_size=20,
            generations=6,
            seed=1,
            crossover_prob=0.0,
            mutation_prob=p,
            polish_sweeps=0,
        )
        x = np.array(f.rows)
        return np.array([(x[:i] != x[i]).sum(1).min() for i in range(20, len(x))])

    assert np.all(children_distances(0.0) == 1)
    assert np.any(children_distances(0.5) > 1)


@pytest.mark.parametrize("feasible_only", [True, False])
def test_evolution_budget_and_feasible_only(feasible_only: bool) -> None:
    space = toy_space()
    fa = Recorder(acc)
    p = EvolutionConfig(max_evaluations=150, generations=10_000, feasible_only=feasible_only)
    best = constrained_evolution(space, fa, lat, 9.0, p, seed=0)
    fa.assert_distinct()
    assert best.n_evaluations == len(fa.rows) <= 150 and best.x is not None
    assert lat(best.x[None])[0] <= 9.0
    if feasible_only:  # nothing infeasible was ever evaluated
        assert (lat(np.array(fa.rows)) <= 9.0).all()


def test_evolution_restarts_keep_searching_after_convergence() -> None:
    """On a space small enough to exhaust, a stalled population restarts instead of idling:
    with patience the run keeps finding new candidates until the budget is spent."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(5)), (4,) * 5)
    f = Recorder(lambda x: -np.abs(x - 2).sum(1).astype(float))
    p = EvolutionConfig(population=20, children=5, max_evaluations=400, generations=5000,
                        patience=5, polish_sweeps=0)  # fmt: skip
    best = constrained_evolution(space, f, lambda x: np.zeros(len(x)), 1.0, p, seed=0)
    f.assert_distinct()
    assert best.fitness == 0.0 and len(f.rows) == 400


def test_uniform_random_search_samples_without_replacement() -> None:
    space = CategoricalSpace(("a", "b", "c"), (3, 4, 5))
    f = Recorder(lambda x: x.sum(1).astype(float))
    r = random_search(space, f, lambda x: np.zeros(len(x)), 0.0, 60, seed=3)
    f.assert_distinct()
    assert r.n_evaluations == 60 and r.fitness == 9.0  # 60 = every candidate: the best is found
    x = space.sample_distinct(np.random.default_rng(0), 100)
    assert len(x) == 60 and len({tuple(r) for r in x.tolist()}) == 60  # the space ends the draw


def test_specialize_shares_one_archive_under_one_budget() -> None:
    space = toy_space()
    fa = Recorder(acc)
    res = specialize(
        space, fa, lat, [0.25, 0.5, 0.75], "fraction", seed=0, max_evaluations=600,
        nsga=NsgaConfig(pop_size=40, generations=1000), random_samples=200,
        evolution=EvolutionConfig(generations=1000),
    )  # fmt: skip
    search_rows = fa.rows[len(res.samples_x) :]
    # The random baseline is drawn first and apart; every phase of the search shares the archive.
    assert len(search_rows) == len(set(search_rows)) == res.n_evaluations <= 600
    assert res.rows > res.n_evaluations and res.latency_rows > 0
    for p in res.picks:
        assert p.latency <= p.budget
    assert res.hv_reference[0] == pytest.approx(float(np.median(res.samples_accuracy)))


def test_hypervolume_reference_ignores_a_degenerate_fastest_candidate() -> None:
    space = toy_space()

    def degenerate(x: np.ndarray) -> np.ndarray:  # the fastest candidate scores zero
        return np.where(x.sum(1) == 0, 0.0, acc(x))

    kw = dict(nsga=NsgaConfig(pop_size=40, generations=20), random_samples=500, seed=0,
              evolution=EvolutionConfig(population=30, generations=20))  # fmt: skip
    a = specialize(space, acc, lat, [0.5], "fraction", **kw)
    b = specialize(space, degenerate, lat, [0.5], "fraction", **kw)
    assert b.hypervolume == pytest.approx(a.hypervolume, rel=0.02)


def test_importing_the_engine_imports_no_registry_packaging_or_pymoo() -> None:
    """The engine takes validated config sections (onceflow.config, a light leaf over
    pydantic) but never pulls in the registry, packaging, torch, sklearn or pymoo."""
    code = (
        "import sys, onceflow.search\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pymoo', 'torch', 'sklearn',\n"
        "       'boto3') or m.startswith(('onceflow.registry', 'onceflow.package'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
