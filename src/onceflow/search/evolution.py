"""Constrained evolutionary search for one budget, and the random-search baseline.

Maximize ``fitness`` subject to ``constraint <= budget``, spending at most ``max_evaluations``
distinct candidates (every candidate goes through an :class:`Archive`, so none is paid twice).

A portfolio, sized from the budget (:func:`plan`). Every uniform candidate it evaluates (the
floor, the restarts, the uniform share of the broods, what is left at the end) is the next row
of one uniform feasible stream without replacement (:class:`DistinctStream`), the very rows
``random_search(seed=seed, feasible_only=True)`` draws: the result is never worse than the
best of a uniform feasible sample as large as the uniform rows it evaluated (``uniform_rows``,
at least ``random_share`` of the budget), by construction.

1. the floor: ``random_share`` of the budget on the stream (rejection on the cheap latency
   table); their best is the incumbent, their best members (with the seeds: the lowest-latency
   row, NSGA-II's front) the first population;
2. regularized ("aging") evolution with tournament selection (Real et al., 2019), batched:
   each generation breeds ``children`` from parents picked by tournaments of ``tournament``
   members, and as many of the oldest die, whatever their fitness. Ranking is
   feasibility-aware (feasible by fitness, then infeasible by excess). After ``restart_after``
   of the generations the budget allows without a gain (at least 3), the population restarts
   from the stream's next rows (the elite survives: dropping it explored rugged landscapes
   no better and lost smooth ones). The split of each brood between breeding and the stream
   follows what breeding brings (:class:`_Arms`): once breeding has gone longer without a
   record than the uniform sample is expected to, up to ``uniform_share_max`` of the brood
   goes to the stream;
3. a coordinate polish of the best (one dimension at a time, staying feasible), from a reserve
   of about one sweep; what it leaves goes back to evolution, then to the stream, so a
   budgeted run spends its whole budget unless nothing new is feasible.

Every evaluated feasible candidate is compared with the incumbent, whichever phase asked for it
(before, a restart's fresh candidates were evaluated but never compared). With ``feasible_only``
the constraint is treated as cheap: children that break it are dropped before evaluation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from onceflow.config import EvolutionConfig
from onceflow.search.archive import Archive
from onceflow.search.problem import Best, Counter
from onceflow.search.space import BatchFn, CategoricalSpace, DistinctStream

log = logging.getLogger(__name__)

Sampling = Literal["uniform", "spread"]


def _order(fit: np.ndarray, con: np.ndarray, budget: float) -> np.ndarray:
    """Indices best first: feasible by fitness desc, then infeasible by excess asc. Equal
    fitness ranks by constraint asc: on a plateau the member with more of the budget left
    has more room to grow (on the needle landscapes, losses to the feasible random sample
    at 5 seeds x 12 cells fell from 5 to 3 seeds of 60, wins rose from 15 to 22)."""
    excess = np.maximum(con - budget, 0.0)
    feasible = excess <= 0
    return np.lexsort((con, np.where(feasible, -fit, excess), ~feasible))


class _Evaluator:
    """Fitness and constraint of candidates, through the archive, within this run's budget.
    Every feasible row it returns is compared with the incumbent (``best``), whichever phase
    asked for it: a candidate evaluated is never lost."""

    def __init__(
        self,
        archive: Archive,
        fitness: str,
        constraint: str,
        budget: float,
        cheap_constraint: Counter | None,
        max_evaluations: int | None,
    ) -> None:
        self.a, self.fit, self.con, self.budget = archive, fitness, constraint, budget
        self.cheap = cheap_constraint
        self.lowest = float("inf")  # lowest constraint value seen (reported when none is feasible)
        self.start = archive.n
        self.cap = float("inf") if max_evaluations is None else float(max_evaluations)
        self.best_x: np.ndarray | None = None
        self.best_f, self.best_c = float("nan"), float("nan")
        self.records = 0  # rows that were, when evaluated, better than every feasible one before

    @property
    def spent(self) -> int:
        return self.a.n - self.start

    @property
    def left(self) -> float:
        return min(self.cap - self.spent, self.a.remaining)

    def _best(self) -> float:
        return self.best_f if self.best_x is not None else -np.inf

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
        x, f, c = x[ok], got[self.fit][ok], got[self.con][ok]
        if len(c):
            self.lowest = min(self.lowest, float(c.min()))
        ff = f[c <= self.budget]
        if len(ff):
            run = np.maximum.accumulate(np.concatenate([[self._best()], ff]))
            self.records += int((ff > run[:-1]).sum())
        bx, bf, bc = _best_of(x, f, c, self.budget)
        if bx is not None and (self.best_x is None or bf > self.best_f):
            self.best_x, self.best_f, self.best_c = bx, bf, bc
        return x, f, c


def _fresh(
    space: CategoricalSpace,
    rng: np.random.Generator,
    ev: _Evaluator,
    n: int,
    how: Sampling,
    stream: DistinctStream | None = None,
) -> np.ndarray:
    """Up to ``n`` new candidates (not in the archive; feasible when the constraint is cheap).
    ``uniform`` ones are the next rows of ``stream`` (one sample without replacement)."""
    if n <= 0:
        return np.zeros((0, space.n_dims), np.int64)
    if how == "uniform":
        stream = stream or DistinctStream(space, rng)
        return stream.take(n, exclude=ev.a.contains, accept=ev.feasible)
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


@dataclass(frozen=True)
class Plan:
    """How one run splits its budget (all in distinct evaluations), fixed from the budget."""

    spend: float  # what the run may spend: the budget, or what its generations allow
    floor: int  # uniform feasible samples first: the floor, and the initial population's pool
    reserve: int  # kept for the polish of the best
    population: int
    children: int
    patience: int  # flat generations before a restart (0: never)


def plan(space: CategoricalSpace, p: EvolutionConfig, left: float) -> Plan:
    """The split of ``left`` evaluations (inf: unbounded, then the generations bound it)."""
    size = p.population
    if np.isfinite(left):  # a population that can age several times
        size = max(4, min(size, int(left) // 8))
    n_child = max(1, min(p.children, size // 2))
    # The generations bound the evolution; the floor comes on top (unless the budget binds).
    spend = min(left, float(p.generations * n_child + size) / (1.0 - p.random_share))
    floor = int(p.random_share * spend)
    sweep = int(sum(c - 1 for c in space.cardinalities))
    reserve = min(sweep, int(spend) // 5) if p.polish_sweeps else 0
    gens = max(1.0, (spend - max(floor, size) - reserve) / n_child)
    patience = max(3, int(np.ceil(p.restart_after * gens))) if p.restart_after else 0
    return Plan(spend, floor, reserve, size, n_child, patience)


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
    earlier phases are free and ``fitness``/``constraint`` serve only as the cheap constraint.

    A portfolio, never worse than a uniform feasible sample of ``random_share`` of the budget
    by construction: that sample comes first (its best is the floor; its best members and the
    seeds are the first population), then aging evolution with restarts, then the polish; what
    the polish leaves goes back to evolution, then to uniform samples, until the budget is
    spent or nothing new is feasible."""
    params = params or EvolutionConfig()
    t0 = time.perf_counter()
    # The uniform arm draws from its own generator: one stream without replacement, the same
    # rows random_search(seed=seed, feasible_only=True) draws; breeding has another.
    stream = DistinctStream(space, np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    if archive is None:
        archive = Archive({names[0]: fitness, names[1]: constraint})
    rows0 = archive.rows
    cheap = Counter(constraint) if params.feasible_only else None
    ev = _Evaluator(archive, names[0], names[1], budget, cheap, params.max_evaluations)
    pl = plan(space, params, ev.left)
    ev.cap = min(ev.cap, pl.spend)
    arms = _Arms(stream, params)

    seeds = np.zeros((0, space.n_dims), np.int64)
    if initial is not None and len(initial):
        seeds = space.canonical(np.atleast_2d(np.asarray(initial, np.int64)))
    sx, sf, sc = ev(seeds)  # free when already in the archive
    xs, fs, cs = [sx], [sf], [sc]
    floor_end = t0 + params.random_share * params.time_limit_s  # its share of the time, too
    n0 = ev.room(pl.floor, pl.reserve)
    while n0 > 0:  # in chunks, so that a huge unbudgeted floor stops with its time share
        x, f, c = arms.score(ev, "uniform", arms.uniform(ev, min(n0, max(pl.population, 2000))))
        xs, fs, cs = xs + [x], fs + [f], cs + [c]
        n0 -= len(x)
        if not len(x) or time.perf_counter() > floor_end:
            break
    n1 = ev.room(pl.population - sum(map(len, xs)), pl.reserve)  # a floor too small: fill up
    if n1 > 0:
        x, f, c = ev(_fresh(space, rng, ev, n1, params.init))
        xs, fs, cs = xs + [x], fs + [f], cs + [c]
    x, f, c = np.concatenate(xs), np.concatenate(fs), np.concatenate(cs)
    top = _order(f, c, budget)[: pl.population]  # the floor's best members start the evolution
    state = _Population(x[top], f[top], c[top])
    t_end = t0 + params.time_limit_s
    gen, restarts = _evolve(space, rng, ev, state, pl, params, arms, pl.reserve, t_end, 0)
    if ev.best_x is not None:
        _polish(space, ev, ev.best_x, params.polish_sweeps)
    # Spend what the polish left: more evolution, then uniform feasible samples.
    if ev.left > 0 and time.perf_counter() < t_end:
        gen, r = _evolve(space, rng, ev, state, pl, params, arms, 0, t_end, gen,
                         params.generations)  # fmt: skip
        restarts += r
    while ev.left > 0 and time.perf_counter() < t_end:
        got, _, _ = arms.score(ev, "uniform", arms.uniform(ev, ev.room(max(pl.children, 64))))
        if not len(got):
            break
    secs = time.perf_counter() - t0
    n_cheap = cheap.n if cheap is not None else 0
    log.debug("evolution: %d generations, %d restarts, %d evaluations (%d uniform)", gen,
              restarts, ev.spent, arms.n_uniform)  # fmt: skip
    if ev.best_x is None:
        lowest = ev.lowest if np.isfinite(ev.lowest) else float("nan")
        return Best(None, float("nan"), lowest, ev.spent, secs, gen, state.history,
                    archive.rows - rows0, n_cheap, restarts, arms.n_uniform)  # fmt: skip
    return Best(ev.best_x, ev.best_f, ev.best_c, ev.spent, secs, gen, state.history,
                archive.rows - rows0, n_cheap, restarts, arms.n_uniform)  # fmt: skip


@dataclass
class _Population:
    x: np.ndarray
    f: np.ndarray
    c: np.ndarray
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    born: int = 0
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Birth order: the smallest dies first; the first population is born best-first, so
        # its worst members die first.
        self.age = np.arange(len(self.x))[::-1].copy()
        self.born = len(self.x)

    def add(self, x: np.ndarray, f: np.ndarray, c: np.ndarray, size: int) -> None:
        self.x, self.f = np.concatenate([self.x, x]), np.concatenate([self.f, f])
        self.c = np.concatenate([self.c, c])
        self.age = np.concatenate([self.age, self.born + np.arange(len(x))])
        self.born += len(x)
        if len(self.x) > size:  # the oldest die
            keep = np.sort(np.argsort(self.age, kind="stable")[len(self.x) - size :])
            self.x, self.f, self.c, self.age = (
                self.x[keep],
                self.f[keep],
                self.c[keep],
                self.age[keep],
            )

    def replace(self, x: np.ndarray, f: np.ndarray, c: np.ndarray) -> None:
        self.x, self.f, self.c = x, f, c
        self.age = self.born + np.arange(len(x))
        self.born += len(x)


class _Arms:
    """How each generation's brood splits between breeding and fresh uniform feasible samples
    (the next rows of the run's one uniform stream, which the floor and the restarts draw from
    too): up to ``uniform_share_max`` of it goes to the stream when either rule says breeding
    does no better than sampling would.

    * Children against fresh samples: the recent share of children above the stream's median.
      Uniform rows score 1/2; children that exploit structure score far more. At 1/2 or less
      (an unstructured table: nothing to exploit) the full share goes to the stream, at 3/4
      or more none.
    * Drought: a record is a row better than every feasible row evaluated before it. After
      ``k`` uniform rows the next ``d`` bring about ``ln(1 + d/k)`` records, so once breeding
      has gone ``d > k + 1`` children without one (0.69 expected of the stream) it does worse
      than the stream would: the share grows from 0 there to the full share at ``d = 3(k+1)``
      and drops to 0 at breeding's next record (restarts do not end a drought).

    Where only coverage finds better rows the budget moves to the stream, whose best the
    result is never worse than."""

    def __init__(self, stream: DistinctStream, p: EvolutionConfig) -> None:
        self.stream, self.top = stream, p.uniform_share_max
        self.trials = {"uniform": 0, "bred": 0}
        self.wins = {"uniform": 0, "bred": 0}
        self.drought = 0  # bred children since breeding's last record
        self.uniform_f: list[np.ndarray] = []  # the stream's feasible fitness values
        self.beat: float | None = None  # recent share of children above the stream's median
        self.owed = 0.0  # uniform rows the share has accrued, not yet drawn

    @property
    def n_uniform(self) -> int:
        return self.trials["uniform"]

    def uniform(self, ev: _Evaluator, n: int) -> np.ndarray:
        """The next ``n`` rows of the stream (evaluate them with :meth:`score`)."""
        if n <= 0:
            return np.zeros((0, self.stream.space.n_dims), np.int64)
        return self.stream.take(n, exclude=ev.a.contains, accept=ev.feasible)

    def score(self, ev: _Evaluator, arm: str, x: np.ndarray):  # noqa: ANN201
        """Evaluate ``x`` for ``arm``; its rows and records count for it."""
        r0 = ev.records
        got = ev(x)
        self.trials[arm] += len(got[0])
        self.wins[arm] += ev.records - r0
        f = got[1][got[2] <= ev.budget]
        if arm == "uniform":
            self.uniform_f.append(f)
        else:
            self.drought = 0 if ev.records > r0 else self.drought + len(got[0])
            if len(f) and self.uniform_f:
                med = float(np.median(np.concatenate(self.uniform_f)))
                b = float(np.mean((f > med) + 0.5 * (f == med)))
                self.beat = b if self.beat is None else 0.7 * self.beat + 0.3 * b
        return got

    @property
    def share(self) -> float:
        k = self.trials["uniform"] + 1.0
        dry = min(1.0, max(0.0, self.drought - k) / (2.0 * k))
        # Children no better than uniform rows (half above the stream's median): breeding
        # exploits nothing (an unstructured table); 3 in 4 above: it does.
        flat = 0.0 if self.beat is None else min(1.0, max(0.0, (0.75 - self.beat) / 0.25))
        return self.top * max(dry, flat)

    def split(self, rng: np.random.Generator, room: int) -> int:
        """How many of ``room`` go to uniform samples: the share accrues, and is paid in
        batches of at least a quarter brood (one stream draw and one evaluation call, not a
        row or two per generation)."""
        self.owed += self.share * room
        n = min(int(self.owed), room)
        if n < max(1, room // 4):
            return 0
        self.owed -= n
        return n


def _evolve(
    space: CategoricalSpace,
    rng: np.random.Generator,
    ev: _Evaluator,
    pop: _Population,
    pl: Plan,
    params: EvolutionConfig,
    arms: _Arms,
    reserve: int,
    t_end: float,
    gen: int,
    extra_generations: int = 0,
) -> tuple[int, int]:
    """Generations until the budget (less ``reserve``), the generations or the time run out;
    returns (last generation, restarts). Each brood is bred children and, as ``arms`` says,
    fresh uniform samples; those of them better than the population's median join it."""
    restarts, last_gain, best_f = 0, gen, ev.best_f
    limit = params.generations + extra_generations
    while gen < limit:
        gen += 1
        pop.history.append(ev.best_f if ev.best_x is not None else float("nan"))
        room = ev.room(pl.children, reserve)
        if room <= 0 or time.perf_counter() > t_end or not len(pop.x):
            break
        n_uni = arms.split(rng, room)
        rank = np.empty(len(pop.x), np.int64)
        rank[_order(pop.f, pop.c, ev.budget)] = np.arange(len(pop.x))
        kids = np.zeros((0, space.n_dims), np.int64)
        n_kids = room - n_uni
        for _ in range(10 if n_kids else 0):  # bounded retries: new, feasible children
            k = _breed(space, rng, pop.x, rank, 2 * n_kids, params)
            k = ev.a.novel(np.concatenate([kids, k]))
            k = k[ev.feasible(k)]
            kids = k[:n_kids]
            if len(kids) >= n_kids:
                break
        stuck = n_kids > 0 and not len(kids)  # the neighbourhood is exhausted: restart now
        x, f, c = arms.score(ev, "bred", kids)
        xu, fu, cu = arms.score(ev, "uniform", arms.uniform(ev, n_uni))
        good = (cu <= ev.budget) & (fu > np.median(pop.f))  # uniform rows join if they compete
        pop.add(np.concatenate([x, xu[good]]), np.concatenate([f, fu[good]]),
                np.concatenate([c, cu[good]]), pl.population)  # fmt: skip
        if ev.best_x is not None and not (ev.best_f <= best_f):  # a gain (or the first feasible)
            best_f, last_gain = ev.best_f, gen
        if stuck or (pl.patience and gen - last_gain >= pl.patience):
            restarts += 1
            last_gain = gen
            n = ev.room(max(pl.population - 1, 1), reserve)
            x, f, c = arms.score(ev, "uniform", arms.uniform(ev, n))  # vs the incumbent, too
            if stuck and not len(x):
                break  # nothing new is feasible
            if ev.best_x is not None:  # the elite survives the restart
                x = np.concatenate([ev.best_x[None], x])
                f, c = np.concatenate([[ev.best_f], f]), np.concatenate([[ev.best_c], c])
            pop.replace(x, f, c)
    return gen, restarts


def _best_of(
    x: np.ndarray, f: np.ndarray, c: np.ndarray, budget: float
) -> tuple[np.ndarray | None, float, float]:
    ok = np.flatnonzero(c <= budget)
    if not len(ok):
        return None, float("nan"), float("nan")
    k = ok[int(np.argmax(f[ok]))]
    return x[k].copy(), float(f[k]), float(c[k])


def _polish(space: CategoricalSpace, ev: _Evaluator, x: np.ndarray, sweeps: int) -> None:
    """Coordinate ascent on fitness that keeps feasibility, from ``x``; bounded by ``sweeps`` x D
    steps. Only neighbours not evaluated yet cost an evaluation (the evaluator keeps the best)."""
    for _ in range(sweeps):
        before = ev.best_f
        for d in range(space.n_dims):
            n = space.cardinalities[d]
            if n < 2 or ev.left <= 0:
                continue
            x = ev.best_x if ev.best_x is not None else x
            trial = np.repeat(x[None, :], n, axis=0)
            trial[:, d] = np.arange(n)
            trial = space.canonical(trial)
            trial = trial[np.any(trial != x, axis=1)]
            ev(trial[ev.feasible(trial)])
        if not ev.best_f > before:
            break


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
