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
    NsgaConfig,
    SearchConfig,
)
from onceflow.errors import ConfigError
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
from onceflow.search.space import BatchFn, CategoricalSpace, unique_rows

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
    random_best_accuracy: float  # best predicted accuracy among random feasible samples


@dataclass(frozen=True)
class Specialization:
    front: Front
    picks: list[Pick]
    latency_range: Range
    hypervolume: float  # see ``front_hypervolume``
    hv_reference: tuple[float, float]  # (accuracy, latency) of the reference point
    samples_x: np.ndarray  # random baseline rows (spread over the size range)
    samples_accuracy: np.ndarray
    samples_latency: np.ndarray
    n_evaluations: int
    seconds: float


def front_hypervolume(
    front_acc: np.ndarray, front_lat: np.ndarray, rng_: Range, acc_ref: float
) -> float:
    """Area dominated by the front in (accuracy, latency fraction of the reachable range) up to
    the reference (accuracy of the fastest subnet, slowest latency): 0 = nothing better than
    the fastest subnet; 1 = +100 accuracy points at zero latency."""
    span = max(rng_.span, 1e-12)
    return accuracy_latency_hv(front_acc, front_lat, acc_ref, rng_.high.value, span)


def _merge_into_front(front: Front, x: np.ndarray, objectives: Sequence[Objective]) -> Front:
    """The front with rows ``x`` added (the picks can beat the NSGA-II front near a budget)."""
    allx = np.concatenate([front.x, x])
    vals = {
        o.name: np.concatenate([front.values[o.name], np.asarray(o.fn(x), np.float64)])
        for o in objectives
    }
    F = np.stack(
        [-v if o.maximize else v for o, v in zip(objectives, vals.values(), strict=True)], 1
    )
    allx, first = unique_rows(allx)
    keep = first[non_dominated(F[first])]
    return Front(
        np.concatenate([front.x, x])[keep],
        {k: v[keep] for k, v in vals.items()},
        front.n_evaluations + len(x),
        front.seconds,
        front.generations,
    )


def specialize(
    space: CategoricalSpace,
    accuracy: BatchFn,
    latency: BatchFn,
    budgets: Sequence[float],
    unit: str,
    *,
    nsga: NsgaConfig,
    evolution: EvolutionConfig,
    random_samples: int,
    extra_objectives: Sequence[Objective] = (),
    seed: int = 0,
    describe: Callable[[np.ndarray], str] | None = None,
) -> Specialization:
    """Raises SearchError before any search when a budget is below the lowest reachable
    latency (found by coordinate descent over the dimensions)."""
    t0 = time.perf_counter()
    acc_c, lat_c = Counter(accuracy), Counter(latency)
    rng = np.random.default_rng(seed)
    lat_range = value_range(space, lat_c, rng)
    resolved = [resolve_budget(b, unit, lat_range) for b in budgets]
    for b in resolved:
        check_budget(b, lat_range.low, describe=describe)
    best_acc = coordinate_descent(
        space, acc_c, np.concatenate([space.extremes(), lat_range.high.x[None]]), maximize=True
    )
    log.info(
        "latency range %.4g..%.4g ms; budgets %s ms",
        lat_range.low.value,
        lat_range.high.value,
        ", ".join(f"{b:.4g}" for b in resolved),
    )
    objectives = [
        Objective("accuracy", acc_c, True),
        Objective("latency", lat_c),
        *extra_objectives,
    ]
    front = nsga2(
        space,
        objectives,
        pop_size=nsga.pop_size,
        generations=nsga.generations,
        time_limit_s=nsga.time_limit_s,
        seed=seed,
        polish_sweeps=nsga.polish_sweeps,
        initial=np.stack([lat_range.low.x, lat_range.high.x, best_acc.x]),
    )
    sx = space.sample_spread(rng, random_samples)
    s_acc, s_lat = acc_c(sx), lat_c(sx)
    picks = []
    for spec, b in zip(budgets, resolved, strict=True):
        ok = front.values["latency"] <= b
        seeds = np.concatenate([lat_range.low.x[None], front.x[ok]])
        best = constrained_evolution(space, acc_c, lat_c, b, evolution, seed=seed, initial=seeds)
        assert best.x is not None  # the lowest-latency row is feasible and seeded
        feas = s_lat <= b
        rnd = float(s_acc[feas].max()) if feas.any() else float("nan")
        picks.append(Pick(b, float(spec), best.x, best.fitness, best.constraint, best, rnd))
        log.info(
            "budget %.4g ms: predicted accuracy %.4f at %.4g ms (random best %.4f)",
            b,
            best.fitness,
            best.constraint,
            rnd,
        )
    front = _merge_into_front(front, np.stack([p.x for p in picks]), objectives)
    acc_ref = float(acc_c(lat_range.low.x[None])[0])
    f2 = non_dominated(np.stack([-front.values["accuracy"], front.values["latency"]], 1))
    hv = front_hypervolume(
        front.values["accuracy"][f2], front.values["latency"][f2], lat_range, acc_ref
    )
    n_evals = max(acc_c.n, lat_c.n)
    return Specialization(
        front,
        picks,
        lat_range,
        hv,
        (acc_ref, lat_range.high.value),
        sx,
        s_acc,
        s_lat,
        n_evals,
        time.perf_counter() - t0,
    )


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
        nsga=cfg.nsga,
        evolution=cfg.evolution,
        random_samples=cfg.random_samples,
        extra_objectives=[Objective(n, extra[n]) for n in cfg.extra_objectives],
        seed=seed,
        describe=describe,
    )
