"""Specialization for one target: the accuracy/latency Pareto front, one pick per latency
budget, and the random baseline they are compared with. Numbers in, numbers out: callers pass
the space, the predicted-accuracy and latency batch functions and the budgets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onceflow.config import (
    BudgetConfig,
    EvolutionConfig,
    LatencyTarget,
    SearchConfig,
)
from onceflow.errors import ConfigError
from onceflow.search.archive import Archive
from onceflow.search.bounds import (
    Range,
    check_budget,
    coordinate_descent,
    resolve_budget,
    value_range,
)
from onceflow.search.evolution import constrained_evolution
from onceflow.search.nsga import nsga2
from onceflow.search.pareto import accuracy_latency_hv, non_dominated
from onceflow.search.problem import Best, Counter, Front, Objective
from onceflow.search.space import BatchFn, CategoricalSpace
from onceflow.threads import limit_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pick:
    """The chosen candidate for one budget, and what random search found for comparison."""

    budget: float  # in latency units (ms)
    budget_spec: float  # as configured (ms or fraction)
    x: np.ndarray  # (D,) int64
    accuracy: float  # predicted
    latency: float  # estimated
    search: Best  # the constrained evolution's record
    random_best_accuracy: float  # best predicted accuracy among the uniform random samples


@dataclass(frozen=True)
class Specialization:
    front: Front
    picks: list[Pick]
    latency_range: Range
    hypervolume: float  # see ``front_hypervolume``
    hv_reference: tuple[float, float]  # (accuracy, latency) of the reference point
    samples_x: np.ndarray  # random baseline rows (uniform, without replacement)
    samples_accuracy: np.ndarray
    samples_latency: np.ndarray
    n_evaluations: int  # distinct candidates whose accuracy the search evaluated
    seconds: float
    rows: int = 0  # rows the search looked up (repeats and archive hits included)
    latency_rows: int = 0  # rows the cheap latency function was asked (range, feasibility)
    max_evaluations: int | None = None  # the evaluation budget in force (see evaluation_budget)


def front_hypervolume(
    front_acc: np.ndarray, front_lat: np.ndarray, rng_: Range, acc_ref: float
) -> float:
    """Area dominated by the front in (accuracy, latency fraction of the reachable range) up to
    the reference (``acc_ref``, slowest latency): 1 = +100 accuracy points at zero latency.
    :func:`specialize` takes ``acc_ref`` = the median accuracy of the uniform random samples (a
    typical subnet), which a degenerate fastest subnet cannot drag down."""
    span = max(rng_.span, 1e-12)
    return accuracy_latency_hv(front_acc, front_lat, acc_ref, rng_.high.value, span)


def _merge_into_front(front: Front, archive: Archive, names: Sequence[str], signs: np.ndarray):
    """The non-dominated set of the whole archive (the picks can beat NSGA-II near a budget)."""
    F = np.stack([archive.value(n) for n in names], axis=1) * signs
    keep = non_dominated(F)
    return Front(
        archive.x[keep],
        {n: archive.value(n)[keep] for n in names},
        archive.n,
        front.seconds,
        front.generations,
        archive.rows,
    )


def _shares(total: int | None, spent: int, n_budgets: int) -> tuple[int | None, int | None]:
    """(NSGA-II's, each budget's evolution's) share of what is left of ``total``: half for the
    front, the other half split over the budgets."""
    if total is None:
        return None, None
    left = max(total - spent, 0)
    nsga = left // 2
    return max(nsga, 1), max((left - nsga) // max(n_budgets, 1), 1)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def specialize(
    space: CategoricalSpace,
    accuracy: BatchFn,
    latency: BatchFn,
    budgets: Sequence[float],
    unit: str,
    cfg: SearchConfig,
    *,
    extra_objectives: Sequence[Objective] = (),
    seed: int,
    describe: Callable[[np.ndarray], str] | None = None,
) -> Specialization:
    """The front, one pick per budget and the uniform random baseline, as ``cfg`` (params.yaml's
    ``search`` section) says.

    Accuracy is treated as the expensive objective: every candidate whose accuracy is asked goes
    through one archive shared by every phase (best-accuracy descent, NSGA-II, each budget's
    evolution, their polish), so none is evaluated twice, and ``cfg.max_evaluations`` (by
    default :func:`evaluation_budget` of the space) bounds the distinct candidates of the whole
    search (NSGA-II gets half of what the descent leaves, the budgets share the rest). Latency
    is cheap (a table): the latency range and feasibility checks call it directly. The random
    baseline is drawn apart and not counted.

    Raises SearchError before any search when a budget is below the lowest reachable latency
    (found by coordinate descent over the dimensions).

    Runs at one thread (torch, BLAS, OpenMP): the search's batches (25-100 rows in the loop,
    the 20,000-row baseline once) never paid for a pool, and under load a pool's fork-join made
    the loop ~10x slower (see :mod:`onceflow.threads`)."""
    with limit_threads(1):
        return _specialize(space, accuracy, latency, budgets, unit, cfg, extra_objectives,
                           seed, describe)  # fmt: skip


def evaluation_budget(cfg: SearchConfig, space: CategoricalSpace) -> int:
    """Distinct candidates one search may evaluate: ``cfg.max_evaluations``, or by default
    ``evaluations_share`` of the space (at least ``min_evaluations``), so that a search never
    exhausts a small space (on the supernet's ~1e13 the generations bound it first)."""
    if cfg.max_evaluations is not None:
        return cfg.max_evaluations
    return max(cfg.min_evaluations, int(np.ceil(cfg.evaluations_share * space.size())))


def _specialize(
    space: CategoricalSpace,
    accuracy: BatchFn,
    latency: BatchFn,
    budgets: Sequence[float],
    unit: str,
    cfg: SearchConfig,
    extra_objectives: Sequence[Objective],
    seed: int,
    describe: Callable[[np.ndarray], str] | None,
) -> Specialization:
    """The steps: latency range and budgets, the random baseline, one archive for every phase,
    best-accuracy descent, NSGA-II's front, one evolution per budget, the merged front."""
    t0 = time.perf_counter()
    max_evaluations = evaluation_budget(cfg, space)
    lat_c = Counter(latency)
    rng = np.random.default_rng(seed)
    lat_range = value_range(space, lat_c, rng)
    resolved = [resolve_budget(b, unit, lat_range) for b in budgets]
    for b in resolved:
        check_budget(b, lat_range.low, describe=describe)
    # The uniform random baseline, drawn apart from the search (and not counted).
    sx = space.sample_distinct(rng, cfg.random_samples)
    s_acc, s_lat = np.asarray(accuracy(sx), np.float64), np.asarray(latency(sx), np.float64)
    objectives = [
        Objective("accuracy", accuracy, True),
        Objective("latency", latency),
        *extra_objectives,
    ]
    archive = Archive({o.name: o.fn for o in objectives}, max_evaluations)
    names = [o.name for o in objectives]
    signs = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    descent_cap = None if max_evaluations is None else max(1, max_evaluations // 10)
    best_acc = coordinate_descent(
        space,
        archive.fn("accuracy", descent_cap),
        np.concatenate([space.extremes(), lat_range.high.x[None]]),
        maximize=True,
    )
    log.info(
        "latency range %.4g..%.4g ms; budgets %s ms",
        lat_range.low.value,
        lat_range.high.value,
        ", ".join(f"{b:.4g}" for b in resolved),
    )
    nsga_share, evo_share = _shares(max_evaluations, archive.n, len(resolved))
    front = nsga2(
        space,
        objectives,
        cfg.nsga,
        seed=seed,
        initial=np.stack([lat_range.low.x, lat_range.high.x, best_acc.x]),
        max_evaluations=nsga_share,
        archive=archive,
    )
    evolution = cfg.evolution.model_copy(
        update={"max_evaluations": _min(cfg.evolution.max_evaluations, evo_share)}
    )
    samples = (s_acc, s_lat)
    picks = []
    for spec, b in zip(budgets, resolved, strict=True):
        picks.append(_pick(space, accuracy, lat_c, float(spec), b, evolution, front, archive,
                           lat_range, samples, seed))  # fmt: skip
    front = _merge_into_front(front, archive, names, signs)
    acc_ref = float(np.median(s_acc)) if len(s_acc) else float(best_acc.value)
    f2 = non_dominated(np.stack([-front.values["accuracy"], front.values["latency"]], 1))
    hv = front_hypervolume(
        front.values["accuracy"][f2], front.values["latency"][f2], lat_range, acc_ref
    )
    log.info("search: %d distinct candidates evaluated, %d rows", archive.n, archive.rows)
    return Specialization(
        front,
        picks,
        lat_range,
        hv,
        (acc_ref, lat_range.high.value),
        sx,
        s_acc,
        s_lat,
        archive.n,
        time.perf_counter() - t0,
        archive.rows,
        lat_c.n,
        max_evaluations,
    )


def _pick(
    space: CategoricalSpace,
    accuracy: BatchFn,
    latency: BatchFn,
    spec: float,
    b: float,
    evolution: EvolutionConfig,
    front: Front,
    archive: Archive,
    lat_range: Range,
    samples: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> Pick:
    """One budget's pick: the constrained evolution under latency ``b`` (seeded with the
    fastest row and, with ``seed_from_front``, the front's most accurate rows under ``b``),
    beside the best random sample under ``b``."""
    seeds = lat_range.low.x[None]
    if evolution.seed_from_front:  # the best front points under the budget
        ok = front.values["latency"] <= b
        order = np.argsort(-front.values["accuracy"][ok], kind="stable")
        seeds = np.concatenate([seeds, front.x[ok][order][: evolution.population // 2]])
    best = constrained_evolution(
        space, accuracy, latency, b, evolution, seed=seed, initial=seeds, archive=archive,
        names=("accuracy", "latency"),
    )  # fmt: skip
    if best.x is None:  # only when the budget left nothing to evaluate even the seed
        x = lat_range.low.x
        got = archive.evaluate(x[None])
        a = float(got["accuracy"][0]) if got.ok[0] else float(accuracy(x[None])[0])
        best = Best(x, a, lat_range.low.value, best.n_evaluations, best.seconds, 0)
    assert best.x is not None
    s_acc, s_lat = samples
    feas = s_lat <= b
    rnd = float(s_acc[feas].max()) if feas.any() else float("nan")
    log.info(
        "budget %.4g ms: predicted accuracy %.4f at %.4g ms (random best %.4f)",
        b,
        best.fitness,
        best.constraint,
        rnd,
    )
    return Pick(b, spec, best.x, best.fitness, best.constraint, best, rnd)


def budgets_for(
    cfg: SearchConfig, targets: Mapping[str, LatencyTarget], target: str
) -> BudgetConfig:
    """The budgets of ``target``: its own ``budgets`` or ``search.default_budgets``;
    ConfigError if ``target`` is not a latency target."""
    if target not in targets:
        raise ConfigError(
            f"params.yaml --target: unknown target {target!r}; latency.targets has "
            f"{sorted(targets)}"
        )
    return targets[target].budgets or cfg.default_budgets


def run_search(
    dims: Iterable[Any],
    cfg: SearchConfig,
    budgets: BudgetConfig,
    accuracy: BatchFn,
    latency: BatchFn,
    *,
    seed: int,
    canonicalize: BatchFn | None = None,
    extra: Mapping[str, BatchFn] | None = None,
    describe: Callable[[np.ndarray], str] | None = None,
) -> Specialization:
    """:func:`specialize` with params.yaml's ``search`` section. ``dims`` are objects with
    ``.name`` and ``.choices``; ``extra`` maps names in ``search.extra_objectives`` to batch
    functions (minimized)."""
    extra = extra or {}
    missing = [n for n in cfg.extra_objectives if n not in extra]
    if missing:
        raise ConfigError(f"search.extra_objectives {missing}: no such objective available")
    return specialize(
        CategoricalSpace.from_dimensions(dims, canonicalize=canonicalize),
        accuracy,
        latency,
        budgets.values,
        budgets.unit,
        cfg,
        extra_objectives=[Objective(n, extra[n]) for n in cfg.extra_objectives],
        seed=seed,
        describe=describe,
    )
