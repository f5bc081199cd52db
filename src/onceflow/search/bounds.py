"""Bounded minimization/maximization of one batch function, and the feasibility check of a budget.

Coordinate descent: from a few starting rows, sweep over dimensions; for each dimension try every
choice with the others fixed and keep the best. For a separable (additive) function one sweep is
exact; for others it is a strong local optimum. Every loop is bounded (sweeps x dimensions).
A function answered through an :class:`~onceflow.search.archive.Archive` returns NaN for rows
its budget left unevaluated; those are never taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onceflow.errors import SearchError
from onceflow.search.space import BatchFn, CategoricalSpace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extremum:
    """The best row found, its value, and how many rows were evaluated to find it."""

    x: np.ndarray  # (D,) int64
    value: float
    n_evaluations: int


def coordinate_descent(
    space: CategoricalSpace,
    fn: BatchFn,
    starts: np.ndarray,
    *,
    maximize: bool = False,
    max_sweeps: int = 8,
) -> Extremum:
    """Best row reachable by coordinate moves from any of ``starts`` ((S, D) int64)."""
    sign = -1.0 if maximize else 1.0
    starts = space.canonical(np.atleast_2d(np.asarray(starts, np.int64)))
    card = space.cardinalities
    n_evals = 0
    best_x, best_v = None, np.inf
    for start in starts:
        x = start.copy()
        v = sign * float(fn(x[None, :])[0])
        n_evals += 1
        if not np.isfinite(v):
            continue
        for _ in range(max_sweeps):
            improved = False
            for d in range(space.n_dims):
                if card[d] < 2:
                    continue
                trial = np.repeat(x[None, :], card[d], axis=0)
                trial[:, d] = np.arange(card[d])
                trial = space.canonical(trial)
                vals = sign * np.asarray(fn(trial), dtype=np.float64)
                vals = np.where(np.isfinite(vals), vals, np.inf)
                n_evals += card[d]
                k = int(np.argmin(vals))
                if vals[k] < v - 1e-12 * max(1.0, abs(v)):
                    x, v, improved = trial[k].copy(), float(vals[k]), True
            if not improved:
                break
        if v < best_v:
            best_x, best_v = x, v
    if best_x is None:
        raise SearchError("coordinate descent: no starting row could be evaluated (budget spent)")
    return Extremum(best_x, sign * best_v, n_evals)


def default_starts(
    space: CategoricalSpace, rng: np.random.Generator, n_random: int = 2
) -> np.ndarray:
    """Starting rows: all-smallest, all-largest and a few spread random rows."""
    return np.concatenate([space.extremes(), space.sample_spread(rng, n_random)])


@dataclass(frozen=True)
class Range:
    """Lowest and highest reachable value of a function over the space (bounded search)."""

    low: Extremum
    high: Extremum

    @property
    def span(self) -> float:
        return self.high.value - self.low.value


def value_range(
    space: CategoricalSpace,
    fn: BatchFn,
    rng: np.random.Generator,
    *,
    extra: np.ndarray | None = None,
    max_sweeps: int = 8,
) -> Range:
    """Range of ``fn`` by coordinate descent and ascent, also starting from ``extra`` rows."""
    starts = default_starts(space, rng)
    if extra is not None and len(extra):
        starts = np.concatenate([starts, np.atleast_2d(extra)])
    low = coordinate_descent(space, fn, starts, maximize=False, max_sweeps=max_sweeps)
    high = coordinate_descent(space, fn, starts, maximize=True, max_sweeps=max_sweeps)
    return Range(low, high)


def check_budget(
    budget: float,
    lowest: Extremum,
    *,
    what: str = "latency budget",
    unit: str = "ms",
    describe: Callable[[np.ndarray], str] | None = None,
) -> None:
    """Raise SearchError at once when ``budget`` is below the lowest reachable value."""
    if not np.isfinite(budget) or budget < lowest.value:
        arch = f" ({describe(lowest.x)})" if describe is not None else ""
        raise SearchError(
            f"{what} {budget:.4g} {unit} is infeasible: the lowest reachable value is "
            f"{lowest.value:.4g} {unit}{arch}; raise the budget to at least that "
            f"(or give it as a fraction of the feasible range)"
        )


def resolve_budget(value: float, unit: str, rng_: Range) -> float:
    """A budget in absolute units (``unit='ms'``) or as a fraction of the reachable range
    (``unit='fraction'``: 0 = lowest reachable, 1 = highest)."""
    if unit == "fraction":
        return rng_.low.value + float(value) * rng_.span
    return float(value)
