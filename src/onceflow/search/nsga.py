"""NSGA-II (pymoo) over a categorical space, with categorical sampling, crossover and mutation.

Every row pymoo evaluates is archived; the returned front is the non-dominated set of the whole
archive (never worse than the final population's). Bounded by generations and a time limit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.core.problem import Problem
from pymoo.core.sampling import Sampling

from onceflow.errors import ConfigError
from onceflow.search.pareto import non_dominated
from onceflow.search.problem import Counter, Front, Objective
from onceflow.search.space import CategoricalSpace, unique_rows

log = logging.getLogger(__name__)


class _ArchivingProblem(Problem):
    def __init__(self, space: CategoricalSpace, objectives: Sequence[Objective]) -> None:
        card = space.card
        super().__init__(
            n_var=space.n_dims,
            n_obj=len(objectives),
            xl=np.zeros_like(card),
            xu=card - 1,
            vtype=int,
        )
        self.space = space
        self.fns = [Counter(o.fn) for o in objectives]
        self.signs = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
        self.xs: list[np.ndarray] = []
        self.fs: list[np.ndarray] = []

    def _evaluate(self, X: np.ndarray, out: dict, *args: object, **kwargs: object) -> None:
        X = np.asarray(X).astype(np.int64)
        F = np.stack([fn(X) for fn in self.fns], axis=1) * self.signs
        self.xs.append(X)
        self.fs.append(F)
        out["F"] = F


class _InitialSampling(Sampling):
    def __init__(self, x0: np.ndarray) -> None:
        super().__init__()
        self.x0 = x0

    def _do(self, problem: Problem, n_samples: int, *args: object, **kwargs: object) -> np.ndarray:
        return self.x0[:n_samples]


class _CategoricalCrossover(Crossover):
    """Uniform crossover giving two complementary children, canonicalized."""

    def __init__(self, space: CategoricalSpace, prob: float) -> None:
        super().__init__(2, 2, prob=prob)
        self.space = space

    def _do(self, problem: Problem, X: np.ndarray, *args: object, random_state=None, **kw: object):
        a, b = X[0].astype(np.int64), X[1].astype(np.int64)
        m = random_state.random(a.shape) < 0.5
        c = self.space.canonical
        return np.stack([c(np.where(m, a, b)), c(np.where(m, b, a))])


class _CategoricalMutation(Mutation):
    """Each index resampled to another choice with probability ``prob_var``."""

    def __init__(self, space: CategoricalSpace, prob_var: float) -> None:
        super().__init__(prob=1.0)
        self.space = space
        self.p = prob_var

    def _do(self, problem: Problem, X: np.ndarray, *args: object, random_state=None, **kw: object):
        return self.space.mutate(random_state, X.astype(np.int64), self.p)


def nsga2(
    space: CategoricalSpace,
    objectives: Sequence[Objective],
    *,
    pop_size: int = 100,
    generations: int = 100,
    crossover_prob: float = 0.9,
    mutation_prob: float | None = None,
    time_limit_s: float | None = None,
    seed: int = 0,
    initial: np.ndarray | None = None,
    polish_sweeps: int = 5,
) -> Front:
    """Pareto front of ``objectives`` (>= 2) by NSGA-II.

    ``initial`` rows (e.g. known extremes) join a spread-random initial population.
    ``mutation_prob`` is per index (default 1/D). After the generations, up to
    ``polish_sweeps`` rounds of local search evaluate every single-index change of every front
    point and recompute the front (stops early when the front no longer changes).
    """
    if len(objectives) < 2:
        raise ConfigError("nsga2: need at least two objectives")
    if pop_size < 4 or generations < 1:
        raise ConfigError(
            f"nsga2: pop_size >= 4 and generations >= 1 (got {pop_size}, {generations})"
        )
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    x0 = space.sample_spread(rng, pop_size)
    if initial is not None and len(initial):
        x0 = unique_rows(np.concatenate([space.canonical(np.atleast_2d(initial)), x0]))[0]
        x0 = np.concatenate([x0, space.sample_spread(rng, pop_size)])[:pop_size]
    problem = _ArchivingProblem(space, objectives)
    algo = NSGA2(
        pop_size=pop_size,
        sampling=_InitialSampling(x0),
        crossover=_CategoricalCrossover(space, crossover_prob),
        mutation=_CategoricalMutation(space, mutation_prob or 1.0 / space.n_dims),
        eliminate_duplicates=True,
    )
    algo.setup(problem, termination=("n_gen", generations), seed=seed, verbose=False)
    n_gen = 0
    while algo.has_next():
        algo.next()
        n_gen += 1
        if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
            log.info("nsga2: time limit %.1fs reached after %d generations", time_limit_s, n_gen)
            break
    X, F = _archive_front(problem)
    for _ in range(polish_sweeps):
        before = len(problem.xs)
        neighbours = unique_rows(_single_moves(space, X))[0]
        problem.evaluate(neighbours, return_as_dictionary=True)
        X2, F2 = _archive_front(problem)
        if len(problem.xs) == before or np.array_equal(F2, F):
            X, F = X2, F2
            break
        X, F = X2, F2
    values = {o.name: F[:, i] * problem.signs[i] for i, o in enumerate(objectives)}
    n_evals = problem.fns[0].n
    secs = time.perf_counter() - t0
    log.info("nsga2: %d front points from %d evaluations in %.2fs", len(X), n_evals, secs)
    return Front(X, values, n_evals, secs, n_gen)


def _archive_front(problem: _ArchivingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Non-dominated rows (and their minimized objectives) of everything evaluated so far."""
    X, first = unique_rows(np.concatenate(problem.xs))
    F = np.concatenate(problem.fs)[first]
    keep = non_dominated(F)
    return X[keep], F[keep]


def _single_moves(space: CategoricalSpace, X: np.ndarray) -> np.ndarray:
    """Every row that differs from a row of ``X`` in exactly one index (canonicalized)."""
    out = []
    for d, n in enumerate(space.cardinalities):
        if n < 2:
            continue
        t = np.repeat(X, n, axis=0)
        t[:, d] = np.tile(np.arange(n), len(X))
        out.append(t)
    return space.canonical(np.concatenate(out)) if out else X
