"""NSGA-II (pymoo) over a categorical space, with categorical sampling, crossover and mutation.

Every candidate goes through an :class:`Archive` (shared with the other phases of a search when
given): a candidate is evaluated once, offspring already in the archive are replaced by new
ones, and ``max_evaluations`` bounds the distinct candidates this call evaluates. The returned
front is the non-dominated set of the whole archive (never worse than the final population's).
Bounded by generations, the evaluation budget and a time limit; settings come whole from
``search.nsga`` (:class:`~onceflow.config.NsgaConfig`). pymoo is imported on first use.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onceflow.config import NsgaConfig
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
        """Two complementary children, canonicalized: uniform crossover, or for
        ``two_point_share`` of the pairs two-point (blocks of neighbouring dimensions kept)."""

        def __init__(self, prob: float, two_point_share: float) -> None:
            super().__init__(2, 2, prob=prob)
            self.two = two_point_share

        def _do(self, problem: Any, X: np.ndarray, *args: object, random_state=None, **kw: Any):
            a, b = X[0].astype(np.int64), X[1].astype(np.int64)
            m = space.crossover_mask(random_state, len(a), self.two)
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


@dataclass
class _Plan:
    """What the budget allows: the population, the polish reserve and the restart patience."""

    pop_size: int
    reserve: float  # distinct evaluations kept for the polish
    patience: int  # generations without a change of the front before a restart (0: never)


def _plan(cfg: NsgaConfig, budget: float) -> _Plan:
    """Population at most budget / ``evaluations_per_member`` (>= 16), so that a small budget
    still runs dozens of generations (on the rugged landscapes of ``bench_search``, pop 100 at
    200-1000 evaluations ran 2-10 generations and lost to a plain pymoo call); ``polish_share``
    of the budget kept for the polish; restarts after ``restart_after`` of the generations the
    rest allows (of ``generations`` without a budget)."""
    if not np.isfinite(budget):
        gens = float(cfg.generations)
        return _Plan(cfg.pop_size, 0.0, _patience(cfg.restart_after, gens))
    pop = min(cfg.pop_size, max(16, int(budget) // cfg.evaluations_per_member))
    reserve = cfg.polish_share * budget if cfg.polish_sweeps else 0.0
    gens = min(float(cfg.generations), (budget - reserve) / pop)
    return _Plan(pop, reserve, _patience(cfg.restart_after, gens))


def _patience(share: float, generations: float) -> int:
    return max(3, int(np.ceil(share * generations))) if share else 0


def _initial_rows(
    space: CategoricalSpace, rng: np.random.Generator, n: int, initial: np.ndarray | None
) -> np.ndarray:
    """``initial`` rows (e.g. known extremes) first, then spread-random rows, ``n`` in all."""
    x0 = space.sample_spread(rng, n)
    if initial is not None and len(initial):
        x0 = unique_rows(np.concatenate([space.canonical(np.atleast_2d(initial)), x0]))[0]
        x0 = np.concatenate([x0, space.sample_spread(rng, n)])[:n]
    return x0


class _Generations:
    """NSGA-II's generations over the archive, restarted when the archive's front stays the
    same for ``patience`` generations: the new population is the front (thinned evenly along
    it to half the population) plus fresh spread rows, so a run stuck on a plateau or in a
    deceptive basin spends the rest of its budget exploring instead of re-breeding the same
    few rows (what the evolution's restarts do for one objective)."""

    def __init__(self, space, archive, names, signs, cfg: NsgaConfig, plan: _Plan, seed: int,
                 left, t0: float) -> None:  # fmt: skip
        self.space, self.archive, self.names, self.signs = space, archive, names, signs
        self.cfg, self.plan, self.seed, self.left, self.t0 = cfg, plan, seed, left, t0
        self.ops = _operators(space, archive, names, signs)
        self.problem, self.dups = self.ops[0](), self.ops[4]()
        self.p_mut = 1.0 / space.n_dims if cfg.mutation_prob is None else cfg.mutation_prob
        self.rng = np.random.default_rng(seed)
        self.n_gen = self.restarts = self.flat = 0
        self.front_key: bytes | None = None
        self.algo: Any = None

    def start(self, x0: np.ndarray) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2

        _, Init, Cross, Mut, _ = self.ops
        self.dups.check_archive = False  # the first population may hold archived rows
        self.algo = NSGA2(
            pop_size=self.plan.pop_size,
            sampling=Init(x0),
            crossover=Cross(self.cfg.crossover_prob, self.cfg.two_point_share),
            mutation=Mut(self.p_mut),
            eliminate_duplicates=self.dups,
        )
        gens = max(1, self.cfg.generations - self.n_gen)
        self.algo.setup(self.problem, termination=("n_gen", gens),
                        seed=self.seed + 7919 * self.restarts, verbose=False)  # fmt: skip

    def run(self, keep: float) -> None:
        """Generations until only ``keep`` of the budget is left (or generations, time)."""
        algo, problem, limit = self.algo, self.problem, self.cfg.time_limit_s
        while self.n_gen < self.cfg.generations and self.left(keep) > 0:
            if not algo.has_next():
                break
            pop = algo.ask()
            if pop is None or len(pop) == 0:
                break
            problem.limit = self.left(keep)
            algo.evaluator.eval(problem, pop)
            done = np.isfinite(pop.get("F")).all(axis=1)
            if not done.any():
                break
            algo.tell(infills=pop[done])
            self.dups.check_archive = True
            self.n_gen += 1
            if not done.all():
                break  # the budget ran out in this generation
            if time.perf_counter() - self.t0 > limit:
                log.info("nsga2: time limit %.1fs after %d generations", limit, self.n_gen)
                break
            if self._stalled():
                self._restart()
                algo = self.algo

    def _stalled(self) -> bool:
        if not self.plan.patience:
            return False
        key = _archive_front(self.archive, self.names, self.signs)[1].tobytes()
        self.flat = self.flat + 1 if key == self.front_key else 0
        self.front_key = key
        return self.flat >= self.plan.patience

    def _restart(self) -> None:
        X = _archive_front(self.archive, self.names, self.signs)[0]
        half = self.plan.pop_size // 2
        if len(X) > half:
            X = X[np.unique(np.linspace(0, len(X) - 1, half).round().astype(np.int64))]
        fresh = self.archive.novel(self.space.sample_spread(self.rng, 4 * self.plan.pop_size))
        self.restarts += 1
        self.flat = 0
        log.debug("nsga2: restart %d after %d generations", self.restarts, self.n_gen)
        self.start(np.concatenate([X, fresh[: self.plan.pop_size - len(X)]]))


def _polish(space, archive, names, signs, cfg: NsgaConfig, left, rng) -> None:  # noqa: ANN001
    """Up to ``cfg.polish_sweeps`` rounds evaluating the single-index changes, not evaluated
    yet, of every point of the archive's first non-dominated layer; when a round leaves the
    front unchanged (or the layer has no new neighbour), the next round takes one more layer
    (up to ``cfg.polish_layers``): the gaps of a front are often a move away from rows just
    behind it. Stops when the budget is spent."""
    X, F = _archive_front(archive, names, signs)
    layers = 1
    for _ in range(cfg.polish_sweeps):
        if left() <= 0:
            break
        base = _archive_layers(archive, names, signs, layers) if layers > 1 else X
        neighbours = archive.novel(_single_moves(space, base))
        if len(neighbours):
            if len(neighbours) > left():  # a partial sweep: no bias towards the first dimensions
                neighbours = neighbours[rng.permutation(len(neighbours))]
            archive.evaluate(neighbours, left())
            X2, F2 = _archive_front(archive, names, signs)
            same = np.array_equal(F2, F)
            X, F = X2, F2
            if not same:
                layers = 1
                continue
        if layers >= cfg.polish_layers:
            break
        layers += 1


def _archive_layers(archive: Archive, names, signs: np.ndarray, k: int) -> np.ndarray:  # noqa: ANN001
    """Rows of the archive's first ``k`` non-dominated layers."""
    X = archive.x
    F = np.stack([archive.value(n) for n in names], axis=1) * signs
    left_ = np.arange(len(X))
    out = []
    for _ in range(k):
        if not len(left_):
            break
        keep = non_dominated(F[left_])
        out.append(left_[keep])
        left_ = np.delete(left_, keep)
    return X[np.concatenate(out)]


def nsga2(
    space: CategoricalSpace,
    objectives: Sequence[Objective],
    cfg: NsgaConfig,
    *,
    seed: int,
    initial: np.ndarray | None = None,
    max_evaluations: int | None = None,
    archive: Archive | None = None,
) -> Front:
    """Pareto front of ``objectives`` (>= 2) by NSGA-II, as ``cfg`` (``search.nsga``) says.

    ``initial`` rows (e.g. known extremes) join a spread-random initial population.
    ``mutation_prob`` is per index (default 1/D; 0 is honoured: one index per child still
    changes). After the generations, up to ``polish_sweeps`` rounds of local search
    (:func:`_polish`). ``archive`` (evaluating every objective under its name) shares
    evaluations with other phases; ``max_evaluations`` (and ``cfg.max_evaluations``) bound the
    distinct candidates this call evaluates, polish included (see :func:`_plan`); what the
    polish leaves goes back to the generations, so the budget is spent. Generations restart
    when the front stalls (:class:`_Generations`). The result is the non-dominated set of the
    whole archive: never worse than any population's.
    """
    if len(objectives) < 2:
        raise ConfigError("nsga2: need at least two objectives")
    t0 = time.perf_counter()
    names = [o.name for o in objectives]
    if archive is None:
        archive = Archive({o.name: o.fn for o in objectives})
    missing = [n for n in names if n not in archive.fns]
    if missing:
        raise ConfigError(f"nsga2: the archive does not evaluate {missing}")
    n0, rows0 = archive.n, archive.rows
    caps = [c for c in (max_evaluations, cfg.max_evaluations) if c is not None]
    cap = float(min(caps)) if caps else float("inf")

    def left(reserve: float = 0.0) -> float:
        return min(cap - (archive.n - n0), archive.remaining) - reserve

    budget = min(cap, archive.remaining)
    plan = _plan(cfg, budget)
    signs = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    gen = _Generations(space, archive, names, signs, cfg, plan, seed, left, t0)
    gen.start(_initial_rows(space, gen.rng, plan.pop_size, initial))
    gen.run(plan.reserve)
    _polish(space, archive, names, signs, cfg, left, gen.rng)
    if left() > 0 and np.isfinite(budget):  # what the polish left: back to the generations
        gen.run(0.0)
    X, F = _archive_front(archive, names, signs)
    values = {o.name: F[:, i] * signs[i] for i, o in enumerate(objectives)}
    n_evals, secs = archive.n - n0, time.perf_counter() - t0
    log.info("nsga2: %d front points from %d evaluations in %.2fs", len(X), n_evals, secs)
    return Front(X, values, n_evals, secs, gen.n_gen, archive.rows - rows0)


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
