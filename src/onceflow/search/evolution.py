"""Constrained evolutionary search for one budget, and the random-search baseline.

Maximize ``fitness`` subject to ``constraint <= budget``, spending at most ``max_evaluations``
distinct candidates (every candidate goes through an :class:`Archive`, so none is paid twice).

The evolution is regularized ("aging") evolution with tournament selection (Real et al., 2019),
batched: each generation breeds ``children`` candidates from parents picked by tournaments of
``tournament`` random members, and the oldest ``children`` members die, whatever their fitness.
Ageing and small tournaments keep diversity where "keep the top quarter" converged within a few
generations. Ranking is feasibility-aware: every feasible candidate beats every infeasible one;
feasible ones by fitness, infeasible ones by how far they exceed the budget. When the best has
not improved for ``patience`` generations the population restarts around fresh random
candidates (the best is kept). With ``feasible_only`` the constraint is treated as cheap (a
latency table): children that break it are dropped before they are evaluated. A final
coordinate polish improves the best candidate one dimension at a time while it stays feasible,
skipping neighbours already evaluated.
"""

from __future__ import annotations

import logging
import time
from typing import Literal

import numpy as np

from onceflow.config import EvolutionConfig
from onceflow.search.archive import Archive
from onceflow.search.problem import Best, Counter
from onceflow.search.space import BatchFn, CategoricalSpace

log = logging.getLogger(__name__)

Sampling = Literal["uniform", "spread"]


def _order(fit: np.ndarray, con: np.ndarray, budget: float) -> np.ndarray:
    """Indices best first: feasible by fitness desc, then infeasible by excess asc."""
    excess = np.maximum(con - budget, 0.0)
    feasible = excess <= 0
    return np.lexsort((np.where(feasible, -fit, excess), ~feasible))


class _Evaluator:
    """Fitness and constraint of candidates, through the archive, within this run's budget."""

    def __init__(
        self,
        archive: Archive,
        fitness: str,
        constraint: str,
        budget: float,
        cheap_constraint: BatchFn | None,
        max_evaluations: int | None,
    ) -> None:
        self.a, self.fit, self.con, self.budget = archive, fitness, constraint, budget
        self.cheap = cheap_constraint
        self.lowest = float("inf")  # lowest constraint value seen (reported when none is feasible)
        self.start = archive.n
        self.cap = float("inf") if max_evaluations is None else float(max_evaluations)

    @property
    def spent(self) -> int:
        return self.a.n - self.start

    @property
    def left(self) -> float:
        return min(self.cap - self.spent, self.a.remaining)

    def room(self, n: int, reserve: int = 0) -> int:
        """How many of ``n`` new candidates the budget still allows (keeping ``reserve``)."""
        return int(max(0.0, min(float(n), self.left - reserve)))

    def feasible(self, x: np.ndarray) -> np.ndarray:
        """Bool mask by the cheap constraint (all True when the constraint is not cheap)."""
        if self.cheap is None or not len(x):
            return np.ones(len(x), bool)
        c = np.asarray(self.cheap(x), np.float64)
        self.lowest = min(self.lowest, float(c.min()))
        return c <= self.budget

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows evaluated, their fitness, their constraint); rows left out by the budget are
        dropped."""
        if not len(x):
            return x, np.zeros(0), np.zeros(0)
        got = self.a.evaluate(x, self.left)
        ok = got.ok
        if ok.any():
            self.lowest = min(self.lowest, float(got[self.con][ok].min()))
        return x[ok], got[self.fit][ok], got[self.con][ok]


def _fresh(
    space: CategoricalSpace,
    rng: np.random.Generator,
    ev: _Evaluator,
    n: int,
    how: Sampling,
) -> np.ndarray:
    """Up to ``n`` new candidates (not in the archive; feasible when the constraint is cheap)."""
    if how == "uniform":
        return space.sample_distinct(rng, n, exclude=ev.a.contains, accept=ev.feasible)
    out = np.zeros((0, space.n_dims), np.int64)
    for _ in range(20):  # bounded: 20 rounds of 4n spread draws
        x = space.sample_spread(rng, 4 * max(n, 8))
        x = ev.a.novel(np.concatenate([out, x]))[len(out) :] if len(out) else ev.a.novel(x)
        x = x[ev.feasible(x)]
        if len(out):
            x = x[~_rows_in(x, out)]
        out = np.concatenate([out, x])[:n]
        if len(out) >= n:
            break
    return out


def _rows_in(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    keys = {r.tobytes() for r in np.ascontiguousarray(ref, np.int64)}
    return np.fromiter((r.tobytes() in keys for r in np.ascontiguousarray(x)), bool, len(x))


def _breed(
    space: CategoricalSpace,
    rng: np.random.Generator,
    pop: np.ndarray,
    rank: np.ndarray,
    n: int,
    p: EvolutionConfig,
) -> np.ndarray:
    """``n`` children of tournament-selected parents (``rank``: 0 = best member)."""

    def parents(k: int) -> np.ndarray:
        t = rng.integers(0, len(pop), (k, min(p.tournament, len(pop))))
        return pop[t[np.arange(k), np.argmin(rank[t], axis=1)]]

    n_mut = int(round(p.mutation_fraction * n))
    mut = space.mutate(rng, parents(n_mut), p.mutation_prob)
    cross = space.crossover(rng, parents(n - n_mut), parents(n - n_mut))
    # Crossover children equal to a parent are common late in a run: mutate them lightly.
    cross = space.mutate(rng, cross, 0.0)
    return np.concatenate([mut, cross])


def constrained_evolution(
    space: CategoricalSpace,
    fitness: BatchFn,
    constraint: BatchFn,
    budget: float,
    params: EvolutionConfig | None = None,
    *,
    seed: int = 0,
    initial: np.ndarray | None = None,
    archive: Archive | None = None,
    names: tuple[str, str] = ("fitness", "constraint"),
) -> Best:
    """Best fitness under ``constraint <= budget``. Pass known feasible rows (the lowest-
    constraint one, Pareto-front points) in ``initial`` to seed the population. With a shared
    ``archive`` (evaluating ``names`` = (fitness name, constraint name)) candidates evaluated by
    earlier phases are free and ``fitness``/``constraint`` serve only as the cheap constraint."""
    params = params or EvolutionConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if archive is None:
        archive = Archive({names[0]: fitness, names[1]: constraint})
    rows0 = archive.rows
    cheap = Counter(constraint) if params.feasible_only else None
    ev = _Evaluator(archive, names[0], names[1], budget, cheap, params.max_evaluations)
    # Leave one polish sweep's worth of the budget (at most a fifth of it) for the polish.
    sweep = int(sum(c - 1 for c in space.cardinalities))
    reserve = 0
    if params.max_evaluations is not None and params.polish_sweeps:
        reserve = min(sweep, params.max_evaluations // 5)
    size = params.population
    if params.max_evaluations is not None:  # a population that can age several times
        size = max(4, min(size, params.max_evaluations // 8))
    n_child = max(1, min(params.children, size // 2))

    seeds = np.zeros((0, space.n_dims), np.int64)
    if initial is not None and len(initial):
        seeds = space.canonical(np.atleast_2d(np.asarray(initial, np.int64)))
    pop, fit, con = ev(seeds)  # free when already in the archive
    pop, fit, con = pop[:size], fit[:size], con[:size]
    x, f, c = ev(_fresh(space, rng, ev, ev.room(size - len(pop), reserve), params.init))
    pop, fit, con = np.concatenate([pop, x]), np.concatenate([fit, f]), np.concatenate([con, c])
    age = np.arange(len(pop))  # birth order: the smallest dies first
    best_x, best_f, best_c = _best_of(pop, fit, con, budget)
    history: list[float] = []
    gen, last_gain, restarts, born = 0, 0, 0, len(pop)
    for gen in range(1, params.generations + 1):  # noqa: B007 (gen is reported)
        history.append(best_f if best_x is not None else float("nan"))
        room = ev.room(n_child, reserve)
        if room <= 0 or time.perf_counter() - t0 > params.time_limit_s or not len(pop):
            break
        rank = np.empty(len(pop), np.int64)
        rank[_order(fit, con, budget)] = np.arange(len(pop))
        kids = np.zeros((0, space.n_dims), np.int64)
        for _ in range(10):  # bounded retries to fill the brood with new, feasible children
            k = _breed(space, rng, pop, rank, 2 * room, params)
            k = archive.novel(np.concatenate([kids, k]))
            k = k[ev.feasible(k)]
            kids = k[:room]
            if len(kids) >= room:
                break
        if not len(kids):  # the neighbourhood is exhausted: restart now
            last_gain = gen - params.patience if params.patience else gen
        x, f, c = ev(kids)
        pop, fit, con = np.concatenate([pop, x]), np.concatenate([fit, f]), np.concatenate([con, c])
        age = np.concatenate([age, born + np.arange(len(x))])
        born += len(x)
        if len(pop) > size:  # the oldest die
            keep = np.sort(np.argsort(age, kind="stable")[len(pop) - size :])
            pop, fit, con, age = pop[keep], fit[keep], con[keep], age[keep]
        bx, bf, bc = _best_of(x, f, c, budget)
        if bx is not None and (best_x is None or bf > best_f):
            best_x, best_f, best_c, last_gain = bx, bf, bc, gen
        if params.patience and gen - last_gain >= params.patience:
            restarts += 1
            last_gain = gen
            x, f, c = ev(_fresh(space, rng, ev, ev.room(size - 1, reserve), "uniform"))
            if best_x is not None:  # the elite survives the restart
                x = np.concatenate([best_x[None], x])
                f, c = np.concatenate([[best_f], f]), np.concatenate([[best_c], c])
            pop, fit, con = x, f, c
            age = born + np.arange(len(pop))
            born += len(pop)
    if best_x is None:
        lowest = ev.lowest if np.isfinite(ev.lowest) else float("nan")
        return Best(None, float("nan"), lowest, ev.spent, time.perf_counter() - t0, gen, history,
                    archive.rows - rows0)  # fmt: skip
    best_x, best_f, best_c = _polish(space, ev, best_x, best_f, best_c, params.polish_sweeps)
    secs = time.perf_counter() - t0
    log.debug("evolution: %d generations, %d restarts, %d evaluations", gen, restarts, ev.spent)
    return Best(best_x, best_f, best_c, ev.spent, secs, gen, history, archive.rows - rows0)


def _best_of(
    x: np.ndarray, f: np.ndarray, c: np.ndarray, budget: float
) -> tuple[np.ndarray | None, float, float]:
    ok = np.flatnonzero(c <= budget)
    if not len(ok):
        return None, float("nan"), float("nan")
    k = ok[int(np.argmax(f[ok]))]
    return x[k].copy(), float(f[k]), float(c[k])


def _polish(
    space: CategoricalSpace,
    ev: _Evaluator,
    x: np.ndarray,
    bf: float,
    bc: float,
    sweeps: int,
) -> tuple[np.ndarray, float, float]:
    """Coordinate ascent on fitness that keeps feasibility; bounded by ``sweeps`` x D steps.
    Only neighbours not evaluated yet cost an evaluation; the point itself is never asked."""
    for _ in range(sweeps):
        improved = False
        for d in range(space.n_dims):
            n = space.cardinalities[d]
            if n < 2:
                continue
            trial = np.repeat(x[None, :], n, axis=0)
            trial[:, d] = np.arange(n)
            trial = space.canonical(trial)
            trial = trial[np.any(trial != x, axis=1)]
            trial = trial[ev.feasible(trial)]
            tx, tf, tc = ev(trial)
            tf = np.where(tc <= ev.budget, tf, -np.inf)
            if len(tf) and tf.max() > bf:
                k = int(np.argmax(tf))
                x, bf, bc, improved = tx[k].copy(), float(tf[k]), float(tc[k]), True
        if not improved:
            break
    return x, bf, bc


def random_search(
    space: CategoricalSpace,
    fitness: BatchFn,
    constraint: BatchFn,
    budget: float,
    n_samples: int,
    *,
    seed: int = 0,
    sampling: Sampling = "uniform",
    feasible_only: bool = False,
) -> Best:
    """Best of ``n_samples`` distinct random candidates under the budget (the baseline).

    ``uniform``: uniformly without replacement; ``spread``: over the whole size range (see
    ``sample_spread``; assumes ordered choices, draws with replacement). ``feasible_only`` spends
    the samples on candidates the (cheap) constraint accepts, as the evolution does."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    f, c = Counter(fitness), Counter(constraint)
    if sampling == "uniform":
        accept = (lambda x: c(x) <= budget) if feasible_only else None
        x = space.sample_distinct(rng, n_samples, accept=accept)
    else:
        x = space.sample_spread(rng, n_samples)
    con = c(x)
    ok = np.flatnonzero(con <= budget)
    secs = time.perf_counter() - t0
    if not len(ok):
        return Best(None, float("nan"), float("nan"), len(x), secs, 0, [], len(x))
    fit = f(x[ok])
    k = int(np.argmax(fit))
    n_eval = len(ok) if feasible_only else len(x)
    return Best(x[ok[k]].copy(), float(fit[k]), float(con[ok[k]]), n_eval, secs, 0, [], f.n)
