"""Evaluation budgets and the shared archive: no candidate is evaluated twice by any phase, the
budget bounds the distinct candidates, and the baselines and options do what they say."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from onceflow.config import EvolutionConfig, NsgaConfig, SearchConfig
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
        NsgaConfig(pop_size=20, generations=1000),
        seed=0,
        max_evaluations=300,
    )
    fa.assert_distinct()
    assert front.n_evaluations == len(fa.rows) <= 300 and front.rows >= front.n_evaluations
    assert len(fa.rows) >= 290  # the budget, not the generations, ended it


@pytest.mark.parametrize("n", [200, 500, 1000])
def test_nsga2_spends_the_polish_reserve(n: int) -> None:
    """What the front's polish leaves (it stops once the front stops changing) goes back to
    the generations: the whole budget is spent."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (5,) * 6)
    f = lambda x: np.sin(x @ np.arange(1.0, 7.0))  # noqa: E731
    c = lambda x: x.sum(1).astype(float)  # noqa: E731
    front = nsga2(space, [Objective("f", f, True), Objective("c", c)],
                  NsgaConfig(generations=10**6), seed=0, max_evaluations=n)  # fmt: skip
    assert front.n_evaluations == n


def test_nsga2_mutation_prob_zero_is_honoured() -> None:
    """Without crossover, a child with mutation_prob 0 differs from its parent in exactly one
    index (the forced one); ``0.0 or default`` would change more."""
    space = toy_space()

    def children_distances(p: float) -> np.ndarray:
        f = Recorder(acc)
        cfg = NsgaConfig(pop_size=20, generations=6, crossover_prob=0.0, mutation_prob=p,
                         polish_sweeps=0, restart_after=0)  # fmt: skip
        nsga2(space, [Objective("accuracy", f, True), Objective("latency", lat)], cfg, seed=1)
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
                        restart_after=0.05, polish_sweeps=0, random_share=0.0)  # fmt: skip
    best = constrained_evolution(space, f, lambda x: np.zeros(len(x)), 1.0, p, seed=0)
    f.assert_distinct()
    assert best.fitness == 0.0 and len(f.rows) == 400 and best.restarts > 0


def _needles(x: np.ndarray) -> np.ndarray:
    """Flat but for a few isolated needles: breeding finds nothing, only fresh samples do."""
    h = (x * np.array([7, 11, 13, 17, 19, 23])).sum(1) % 97
    return np.where(h == 0, 1.0 + x[:, 0] / 10.0, 0.0)


@pytest.mark.parametrize("seed", [0, 7, 8])  # seeds where the unfixed engine lost a needle
def test_evolution_returns_the_best_candidate_it_evaluated_restarts_included(seed: int) -> None:
    """A restart's fresh candidates are compared with the incumbent: the result is the best
    feasible candidate of every one evaluated (the floor, breeding, restarts and polish).
    Before the fix, a needle found by a restart's fresh sample was never the result."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (6,) * 6)
    f = Recorder(_needles)
    p = EvolutionConfig(population=8, children=4, max_evaluations=600, generations=10_000,
                        restart_after=0.02, polish_sweeps=0, random_share=0.0)  # fmt: skip
    best = constrained_evolution(space, f, lambda x: np.zeros(len(x)), 1.0, p, seed=seed)
    rows = np.array(f.rows)
    assert best.restarts > 0 and len(rows) == 600
    assert best.fitness == _needles(rows).max() > 0


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_evolution_spends_its_whole_budget(share: float) -> None:
    """Polish reserve included: a budgeted run spends every evaluation it was given."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(8)), (5,) * 8)
    f = Recorder(lambda x: np.sin(x @ np.arange(1.0, 9.0)))
    for n in (37, 200, 1000):
        p = EvolutionConfig(max_evaluations=n, generations=10**6, random_share=share)
        best = constrained_evolution(space, f, lambda x: x.sum(1), 16.0, p, seed=0)
        assert best.n_evaluations == n and best.x is not None


def test_evolution_never_loses_to_its_own_floor_sample() -> None:
    """The first random_share of the budget is a uniform feasible sample: the result is at
    least that sample's best (the same draw random_search makes with the same seed)."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (6,) * 6)
    con = lambda x: x.sum(1).astype(float)  # noqa: E731
    p = EvolutionConfig(max_evaluations=400, generations=10**6, random_share=0.5)
    best = constrained_evolution(space, _needles, con, 12.0, p, seed=3)
    floor = random_search(space, _needles, con, 12.0, 200, seed=3, feasible_only=True)
    assert best.fitness >= floor.fitness


def _table(x: np.ndarray) -> np.ndarray:
    """An unstructured lookup table (i.i.d. per row): only coverage finds its best rows."""
    h = (x * np.array([1, 6, 36, 216, 1296, 7776])).sum(1)
    return np.random.default_rng(11).random(6**6)[h]


@pytest.mark.parametrize("seed", range(6))
def test_evolution_is_never_worse_than_the_uniform_rows_it_drew(seed: int) -> None:
    """Floor, restarts and the uniform share of each brood are one uniform feasible stream:
    the result is at least the best of random_search's first ``uniform_rows`` draws with the
    same seed. Before, restarts drew independent samples: seed 3 lost to the same seed's first
    floor + restarts x (population - 1) draws."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (6,) * 6)
    con = lambda x: x.sum(1).astype(float)  # noqa: E731
    p = EvolutionConfig(max_evaluations=500, generations=10**6)
    best = constrained_evolution(space, _table, con, 12.0, p, seed=seed)
    assert best.uniform_rows > p.random_share * 500
    same = random_search(space, _table, con, 12.0, best.uniform_rows, seed=seed,
                         feasible_only=True)  # fmt: skip
    assert best.fitness >= same.fitness


def _slope(x: np.ndarray) -> np.ndarray:
    return (np.sqrt(x) * np.array([1.0, 1.3, 0.7, 1.1, 0.9, 1.2])).sum(1)


@pytest.mark.parametrize("seed", range(3))
def test_brood_moves_to_the_uniform_stream_when_breeding_exploits_nothing(seed: int) -> None:
    """On an unstructured table children are no better than uniform rows (half of them above
    the stream's median): most of each brood goes to the stream, far more uniform rows than
    the floor and the restarts alone. On a smooth slope children beat uniform rows and the
    brood stays with breeding (the same run as without the split)."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (6,) * 6)
    con = lambda x: x.sum(1).astype(float)  # noqa: E731

    def run(f, share: float):  # noqa: ANN001, ANN202
        p = EvolutionConfig(max_evaluations=500, generations=10**6, uniform_share_max=share)
        return constrained_evolution(space, f, con, 15.0, p, seed=seed)

    assert run(_table, 0.8).uniform_rows > 0.7 * 500 > 0.6 * 500 > run(_table, 0.0).uniform_rows
    a, b = run(_slope, 0.8), run(_slope, 0.0)
    assert (a.uniform_rows, a.fitness) == (b.uniform_rows, b.fitness)


@pytest.mark.parametrize("seed", range(3))
def test_brood_moves_to_the_uniform_stream_after_a_long_drought(seed: int) -> None:
    """Once breeding has gone longer without a record than the uniform sample is expected to,
    part of each brood goes to the stream even where children still beat uniform rows (no
    restarts here: without the split the uniform rows are the floor's 30%)."""
    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (6,) * 6)
    con = lambda x: x.sum(1).astype(float)  # noqa: E731

    def run(share: float):  # noqa: ANN202
        p = EvolutionConfig(max_evaluations=3000, generations=10**6, restart_after=0.0,
                            uniform_share_max=share)  # fmt: skip
        return constrained_evolution(space, _slope, con, 15.0, p, seed=seed)

    a, b = run(0.8), run(0.0)
    assert b.uniform_rows == 900 < a.uniform_rows and a.fitness == b.fitness


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
    cfg = SearchConfig(
        max_evaluations=600, nsga=NsgaConfig(pop_size=40, generations=1000), random_samples=200,
        evolution=EvolutionConfig(generations=1000),
    )  # fmt: skip
    res = specialize(space, fa, lat, [0.25, 0.5, 0.75], "fraction", cfg, seed=0)
    search_rows = fa.rows[len(res.samples_x) :]
    # The random baseline is drawn first and apart; every phase of the search shares the archive.
    assert len(search_rows) == len(set(search_rows)) == res.n_evaluations <= 600
    assert res.n_evaluations >= 0.98 * 600  # the budget is spent
    assert res.rows > res.n_evaluations and res.latency_rows > 0
    for p in res.picks:
        assert p.latency <= p.budget
    assert res.hv_reference[0] == pytest.approx(float(np.median(res.samples_accuracy)))


def test_hypervolume_reference_ignores_a_degenerate_fastest_candidate() -> None:
    space = toy_space()

    def degenerate(x: np.ndarray) -> np.ndarray:  # the fastest candidate scores zero
        return np.where(x.sum(1) == 0, 0.0, acc(x))

    cfg = SearchConfig(nsga=NsgaConfig(pop_size=40, generations=20), random_samples=500,
                       evolution=EvolutionConfig(population=30, generations=20))  # fmt: skip
    a = specialize(space, acc, lat, [0.5], "fraction", cfg, seed=0)
    b = specialize(space, degenerate, lat, [0.5], "fraction", cfg, seed=0)
    assert b.hypervolume == pytest.approx(a.hypervolume, rel=0.02)


def test_default_budget_is_a_share_of_the_space_and_stated() -> None:
    """Without max_evaluations a search on a small space evaluates a few % of it (with a
    floor), never most of it; the budget in force is in the details."""
    from onceflow.search import report
    from onceflow.search.specialize import evaluation_budget

    space = CategoricalSpace(tuple(f"d{i}" for i in range(6)), (6,) * 6)  # 46,656 rows
    cfg = SearchConfig()
    assert evaluation_budget(cfg, space) == int(np.ceil(0.05 * 6**6))
    assert evaluation_budget(cfg, CategoricalSpace(("a", "b"), (3, 3))) == cfg.min_evaluations
    assert evaluation_budget(SearchConfig(max_evaluations=77), space) == 77
    f = Recorder(lambda x: (np.sqrt(x) * np.arange(1, 7)).sum(1))
    res = specialize(space, f, lambda x: x.sum(1).astype(float), [0.5], "fraction",
                     cfg.model_copy(update={"random_samples": 100}), seed=0)  # fmt: skip
    assert res.n_evaluations <= evaluation_budget(cfg, space) < 0.1 * space.size()
    d = report.search_details(res, "t")
    assert d["max_evaluations"] == evaluation_budget(cfg, space) and d["latency_lookups"] > 0
    assert d["selected"][0]["search_latency_lookups"] > 0 and d["seconds"] > 0


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


def _trap() -> tuple[CategoricalSpace, Objective, Objective]:
    """A deceptive landscape (3 groups of 3 dimensions, 4 choices): a group's value rises as
    its indices fall, except at all-largest (the optimum); 0.25-point plateaus; additive cost."""
    w = np.linspace(0.5, 1.5, 9)

    def fitness(x: np.ndarray) -> np.ndarray:
        u = x.reshape(len(x), 3, 3).sum(2) / 9.0
        g = np.where(u >= 1.0, 1.0, 0.8 * (1.0 - u))
        return np.floor((0.70 + 0.20 * g.mean(1)) * 400.0) / 400.0

    space = CategoricalSpace(tuple(f"t{i}" for i in range(9)), (4,) * 9)
    return space, Objective("f", fitness, True), Objective("c", lambda x: 1.0 + x @ w)


def _best_fitness(restart_after: float, seeds: range) -> list[float]:
    space, f, c = _trap()
    cfg = NsgaConfig(generations=10**6, restart_after=restart_after)
    return [float(nsga2(space, [f, c], cfg, seed=s, max_evaluations=1000).values["f"].max())
            for s in seeds]  # fmt: skip


def test_nsga2_restarts_when_the_front_stalls() -> None:
    """Issue 26: a population converged in a deceptive basin re-bred the same few rows until
    the budget ran out (4 of these 10 seeds never found the trap's optimum at 1,000
    evaluations); restarting from the front's spread plus fresh rows finds it in every seed."""
    space, f, _ = _trap()
    top = float(f.fn(space.enumerate_all()).max())
    assert _best_fitness(NsgaConfig().restart_after, range(10)) == [top] * 10
    assert min(_best_fitness(0.0, range(10))) < top  # the control: without restarts it stalls


def test_nsga2_polish_widens_to_the_next_layer_when_the_front_is_stable() -> None:
    """With the true front and all its single moves archived, a front-only polish has nothing
    to evaluate; ``polish_layers`` 2 goes on to the single moves of the second layer."""
    from onceflow.search import non_dominated
    from onceflow.search.nsga import _archive_layers, _polish, _single_moves

    space = CategoricalSpace(("a", "b", "c"), (4, 4, 4))
    rng = np.random.default_rng(3)
    t1, t2 = rng.random(64), rng.random(64)
    idx = lambda x: x @ np.array([16, 4, 1])  # noqa: E731
    fns = {"f": lambda x: t1[idx(x)], "g": lambda x: t2[idx(x)]}
    signs = np.array([1.0, 1.0])
    x = space.enumerate_all()
    front = x[non_dominated(np.stack([t1[idx(x)], t2[idx(x)]], 1))]
    seen = []
    for layers, expect_new in ((1, False), (2, True)):
        a = Archive(fns)
        a.evaluate(np.concatenate([front, _single_moves(space, front)]))
        n0 = a.n
        second = _archive_layers(a, ["f", "g"], signs, 2)
        cfg = NsgaConfig(polish_sweeps=1 + layers, polish_layers=layers)
        _polish(space, a, ["f", "g"], signs, cfg, lambda: float("inf"), rng)
        assert (a.n > n0) == expect_new
        seen.append(a.x[n0:])
    moves = {r.tobytes() for r in _single_moves(space, second)}
    assert all(r.tobytes() in moves for r in seen[1])
