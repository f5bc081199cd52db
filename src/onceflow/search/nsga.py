"""NSGA-II (pymoo) over a categorical space, with categorical sampling, crossover and mutation.

Every candidate goes through an :class:`Archive` (shared with the other phases of a search when
given): a candidate is evaluated once, offspring already in the archive are replaced by new
ones, and ``max_evaluations`` bounds the distinct candidates this call evaluates. The returned
front is the non-dominated set of the whole archive (never worse than the final population's).
Bounded by generations, the evaluation budget and a time limit. pymoo is imported on first use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from onceflow.errors import ConfigError
from onceflow.search.archive import Archive
from onceflow.search.pareto import non_dominated
from onceflow.search.problem import Front, Objective
from onceflow.search.space import CategoricalSpace, unique_rows

log = logging.getLogger(__name__)


def _operators(space: CategoricalSpace, archive: Archive, names: list[str], signs: np.ndarray):
    """pymoo problem, sampling, crossover, mutation and duplicate elimination (built lazily so
    that importing the engine does not import pymoo)."""
    from pymoo.core.crossover import Crossover
    from pymoo.core.duplicate import DuplicateElimination
    from pymoo.core.mutation import Mutation
    from pymoo.core.problem import Problem
    from pymoo.core.sampling import Sampling

    class ArchiveProblem(Problem):
        def __init__(self) -> None:
            card = space.card
            super().__init__(
                n_var=space.n_dims, n_obj=len(names), xl=np.zeros_like(card), xu=card - 1,
                vtype=int,
            )  # fmt: skip
            self.limit: float = float("inf")

        def _evaluate(self, X: np.ndarray, out: dict, *args: object, **kwargs: object) -> None:
            got = archive.evaluate(np.asarray(X).astype(np.int64), self.limit)
            F = np.stack([got[n] for n in names], axis=1) * signs
            out["F"] = np.where(got.ok[:, None], F, np.inf)  # unevaluated: dropped by caller

    class InitialSampling(Sampling):
        def __init__(self, x0: np.ndarray) -> None:
            super().__init__()
            self.x0 = x0

        def _do(self, problem: Any, n_samples: int, *args: object, **kwargs: object):
            return self.x0[:n_samples]

    class CategoricalCrossover(Crossover):
        """Uniform crossover giving two complementary children, canonicalized."""

        def __init__(self, prob: float) -> None:
            super().__init__(2, 2, prob=prob)

        def _do(self, problem: Any, X: np.ndarray, *args: object, random_state=None, **kw: Any):
            a, b = X[0].astype(np.int64), X[1].astype(np.int64)
            m = random_state.random(a.shape) < 0.5
            c = space.canonical
            return np.stack([c(np.where(m, a, b)), c(np.where(m, b, a))])

    class CategoricalMutation(Mutation):
        """Each index resampled to another choice with probability ``prob_var``."""

        def __init__(self, prob_var: float) -> None:
            super().__init__(prob=1.0)
            self.p = prob_var

        def _do(self, problem: Any, X: np.ndarray, *args: object, random_state=None, **kw: Any):
            return space.mutate(random_state, X.astype(np.int64), self.p)

    class ArchiveDuplicates(DuplicateElimination):
        """Rows equal to an earlier row of the population, to a row of ``other``, or (once
        ``check_archive`` is set, i.e. for offspring) to an archived candidate."""

        check_archive = False

        def _do(self, pop: Any, other: Any, is_duplicate: np.ndarray) -> np.ndarray:
            X = np.asarray(pop.get("X")).astype(np.int64)
            if other is None:
                _, first = unique_rows(X)
                dup = np.ones(len(X), bool)
                dup[first] = False
                if self.check_archive:
                    dup |= archive.contains(X)
            else:
                ref = {r.tobytes() for r in np.asarray(other.get("X")).astype(np.int64)}
                dup = np.fromiter((r.tobytes() in ref for r in X), bool, len(X))
            return is_duplicate | dup

    return (
        ArchiveProblem,
        InitialSampling,
        CategoricalCrossover,
        CategoricalMutation,
        ArchiveDuplicates,
    )


def nsga2(
    space: CategoricalSpace,
    objectives: Sequence[Objective],
    *,
    pop_size: int = 100,
    generations: int = 100,
    crossover_prob: float = 0.5,
    mutation_prob: float | None = None,
    time_limit_s: float | None = None,
    seed: int = 0,
    initial: np.ndarray | None = None,
    polish_sweeps: int = 5,
    max_evaluations: int | None = None,
    archive: Archive | None = None,
    polish_share: float = 0.25,
    evaluations_per_member: int = 60,
) -> Front:
    """Pareto front of ``objectives`` (>= 2) by NSGA-II.

    ``initial`` rows (e.g. known extremes) join a spread-random initial population.
    ``mutation_prob`` is per index (default 1/D; 0 is honoured: one index per child still
    changes). After the generations, up to ``polish_sweeps`` rounds of local search evaluate the
    single-index changes of every front point not evaluated yet and recompute the front (stops
    early when the front no longer changes). ``archive`` (evaluating every objective under its
    name) shares evaluations with other phases; ``max_evaluations`` bounds the distinct
    candidates this call evaluates, polish included: then ``polish_share`` of it is kept for
    the polish (what the polish leaves goes back to the generations: the budget is spent),
    and the population is at most 1/``evaluations_per_member`` (60) of the budget (>= 16),
    so that a small budget still runs dozens of generations (on the rugged landscapes of
    ``bench_search``, pop 100 at 200-1000 evaluations ran 2-10 generations and lost to a plain
    pymoo call; 30 won plateau and cell at 1,000 but lost nas on instance 0).
    """
    if len(objectives) < 2:
        raise ConfigError("nsga2: need at least two objectives")
    if pop_size < 4 or generations < 1:
        raise ConfigError(
            f"nsga2: pop_size >= 4 and generations >= 1 (got {pop_size}, {generations})"
        )
    if mutation_prob is not None and not 0 <= mutation_prob <= 1:
        raise ConfigError(f"nsga2: mutation_prob must be in [0, 1] (got {mutation_prob})")
    from pymoo.algorithms.moo.nsga2 import NSGA2

    t0 = time.perf_counter()
    names = [o.name for o in objectives]
    if archive is None:
        archive = Archive({o.name: o.fn for o in objectives})
    missing = [n for n in names if n not in archive.fns]
    if missing:
        raise ConfigError(f"nsga2: the archive does not evaluate {missing}")
    n0, rows0 = archive.n, archive.rows
    cap = float("inf") if max_evaluations is None else float(max_evaluations)

    def left(reserve: float = 0.0) -> float:
        return min(cap - (archive.n - n0), archive.remaining) - reserve

    budget = min(cap, archive.remaining)
    reserve = polish_share * budget if polish_sweeps and np.isfinite(budget) else 0.0
    if np.isfinite(budget):
        pop_size = min(pop_size, max(16, int(budget) // evaluations_per_member))

    signs = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    Prob, Init, Cross, Mut, Dups = _operators(space, archive, names, signs)
    rng = np.random.default_rng(seed)
    x0 = space.sample_spread(rng, pop_size)
    if initial is not None and len(initial):
        x0 = unique_rows(np.concatenate([space.canonical(np.atleast_2d(initial)), x0]))[0]
        x0 = np.concatenate([x0, space.sample_spread(rng, pop_size)])[:pop_size]
    problem, dups = Prob(), Dups()
    p_mut = 1.0 / space.n_dims if mutation_prob is None else mutation_prob
    algo = NSGA2(
        pop_size=pop_size,
        sampling=Init(x0),
        crossover=Cross(crossover_prob),
        mutation=Mut(p_mut),
        eliminate_duplicates=dups,
    )
    algo.setup(problem, termination=("n_gen", generations), seed=seed, verbose=False)
    n_gen = 0

    def run_generations(keep: float) -> None:
        """Generations until only ``keep`` of the budget is left (or generations, time)."""
        nonlocal n_gen
        while algo.has_next() and left(keep) > 0:
            pop = algo.ask()
            if pop is None or len(pop) == 0:
                break
            problem.limit = left(keep)
            algo.evaluator.eval(problem, pop)
            done = np.isfinite(pop.get("F")).all(axis=1)
            if not done.any():
                break
            algo.tell(infills=pop[done])
            dups.check_archive = True
            n_gen += 1
            if not done.all():
                break  # the budget ran out in this generation
            if time_limit_s is not None and time.perf_counter() - t0 > time_limit_s:
                log.info("nsga2: time limit %.1fs after %d generations", time_limit_s, n_gen)
                break

    run_generations(reserve)
    X, F = _archive_front(archive, names, signs)
    for _ in range(polish_sweeps):
        if left() <= 0:
            break
        neighbours = archive.novel(_single_moves(space, X))
        if not len(neighbours):
            break
        if len(neighbours) > left():  # a partial sweep: no bias towards the first dimensions
            neighbours = neighbours[rng.permutation(len(neighbours))]
        archive.evaluate(neighbours, left())
        X2, F2 = _archive_front(archive, names, signs)
        same = np.array_equal(F2, F)
        X, F = X2, F2
        if same:
            break
    if left() > 0 and np.isfinite(budget):  # what the polish left: back to the generations
        run_generations(0.0)
        X, F = _archive_front(archive, names, signs)
    values = {o.name: F[:, i] * signs[i] for i, o in enumerate(objectives)}
    n_evals = archive.n - n0
    secs = time.perf_counter() - t0
    log.info("nsga2: %d front points from %d evaluations in %.2fs", len(X), n_evals, secs)
    return Front(X, values, n_evals, secs, n_gen, archive.rows - rows0)


def _archive_front(
    archive: Archive, names: Sequence[str], signs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Non-dominated rows (and their minimized objectives) of everything archived so far."""
    X = archive.x
    F = np.stack([archive.value(n) for n in names], axis=1) * signs
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
