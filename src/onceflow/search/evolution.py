"""Constrained evolutionary search for one budget, and the random-search baseline.

Maximize ``fitness`` subject to ``constraint <= budget``. Selection is feasibility-aware: every
feasible candidate ranks above every infeasible one; feasible ones by fitness, infeasible ones by
how far they exceed the budget (so the population is pulled back into the feasible region rather
than rejection-sampled: no unbounded loops). A final bounded coordinate polish improves the best
candidate one dimension at a time while it stays feasible.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from onceflow.config import EvolutionConfig
from onceflow.search.problem import Best, Counter
from onceflow.search.space import BatchFn, CategoricalSpace, unique_rows

log = logging.getLogger(__name__)


def _rank(fit: np.ndarray, con: np.ndarray, budget: float) -> np.ndarray:
    """Order (best first): feasible by fitness desc, then infeasible by excess asc."""
    excess = np.maximum(con - budget, 0.0)
    feasible = excess <= 0
    # Primary key: infeasible flag; secondary: -fitness for feasible, excess for infeasible.
    key2 = np.where(feasible, -fit, excess)
    return np.lexsort((key2, ~feasible))


def constrained_evolution(
    space: CategoricalSpace,
    fitness: BatchFn,
    constraint: BatchFn,
    budget: float,
    params: EvolutionConfig,
    *,
    seed: int = 0,
    initial: np.ndarray | None = None,
) -> Best:
    """Best fitness under ``constraint <= budget``. Pass a known feasible row (e.g. the lowest-
    constraint one) in ``initial`` so that the population starts with a feasible candidate."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    f, c = Counter(fitness), Counter(constraint)
    pop = space.sample_spread(rng, params.population)
    if initial is not None and len(initial):
        pop = np.concatenate([space.canonical(np.atleast_2d(initial)), pop])
    pop = unique_rows(pop)[0][: params.population]
    fit, con = f(pop), c(pop)
    n_parents = max(2, int(round(params.parents_fraction * params.population)))
    n_children = params.population - n_parents
    n_mut = int(round(params.mutation_fraction * n_children))
    history: list[float] = []
    gen = 0
    for gen in range(1, params.generations + 1):  # noqa: B007 (gen is reported)
        order = _rank(fit, con, budget)
        parents, pfit, pcon = pop[order[:n_parents]], fit[order[:n_parents]], con[order[:n_parents]]
        feas = pcon <= budget
        history.append(float(pfit[feas].max()) if feas.any() else float("nan"))
        mut = space.mutate(rng, parents[rng.integers(0, n_parents, n_mut)], params.mutation_prob)
        a = parents[rng.integers(0, n_parents, n_children - n_mut)]
        b = parents[rng.integers(0, n_parents, n_children - n_mut)]
        children = np.concatenate([mut, space.crossover(rng, a, b)])
        # Drop children equal to a parent or to each other: they add no information.
        allx, first = unique_rows(np.concatenate([parents, children]))
        children = allx[first >= n_parents] if len(allx) else children[:0]
        cfit, ccon = f(children), c(children)
        pop = np.concatenate([parents, children])
        fit, con = np.concatenate([pfit, cfit]), np.concatenate([pcon, ccon])
        if time.perf_counter() - t0 > params.time_limit_s:
            log.info(
                "evolution: time limit %.1fs reached at generation %d", params.time_limit_s, gen
            )
            break
    order = _rank(fit, con, budget)
    best = order[0]
    if con[best] > budget:
        return Best(
            None, float("nan"), float(con[best]), f.n, time.perf_counter() - t0, gen, history
        )
    x, bf, bc = pop[best].copy(), float(fit[best]), float(con[best])
    x, bf, bc = _polish(space, f, c, budget, x, bf, bc, params.polish_sweeps)
    secs = time.perf_counter() - t0
    return Best(x, bf, bc, f.n, secs, gen, history)


def _polish(
    space: CategoricalSpace,
    f: Counter,
    c: Counter,
    budget: float,
    x: np.ndarray,
    bf: float,
    bc: float,
    sweeps: int,
) -> tuple[np.ndarray, float, float]:
    """Coordinate ascent on fitness that keeps feasibility; bounded by ``sweeps`` x D steps."""
    for _ in range(sweeps):
        improved = False
        for d in range(space.n_dims):
            n = space.cardinalities[d]
            if n < 2:
                continue
            trial = np.repeat(x[None, :], n, axis=0)
            trial[:, d] = np.arange(n)
            trial = space.canonical(trial)
            tf, tc = f(trial), c(trial)
            tf = np.where(tc <= budget, tf, -np.inf)
            k = int(np.argmax(tf))
            if tf[k] > bf:
                x, bf, bc, improved = trial[k].copy(), float(tf[k]), float(tc[k]), True
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
    batch: int = 100_000,
    spread: bool = True,
) -> Best:
    """Best of ``n_samples`` random candidates under the budget (baseline). ``spread`` draws
    candidates over the whole size range (see ``sample_spread``); otherwise uniformly."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    f, c = Counter(fitness), Counter(constraint)
    best_x, best_f, best_c = None, -np.inf, float("nan")
    done = 0
    while done < n_samples:  # bounded: n_samples / batch iterations
        m = min(batch, n_samples - done)
        x = space.sample_spread(rng, m) if spread else space.sample(rng, m)
        done += m
        con = c(x)
        ok = con <= budget
        if not ok.any():
            continue
        xf, fit = x[ok], f(x[ok])
        k = int(np.argmax(fit))
        if fit[k] > best_f:
            best_x, best_f, best_c = xf[k].copy(), float(fit[k]), float(con[ok][k])
    secs = time.perf_counter() - t0
    if best_x is None:
        return Best(None, float("nan"), float("nan"), c.n, secs, 0)
    return Best(best_x, best_f, best_c, c.n, secs, 0)
