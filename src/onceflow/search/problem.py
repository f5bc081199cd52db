"""What a search is given (objectives, a constraint) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onceflow.search.space import BatchFn


@dataclass(frozen=True)
class Objective:
    """A named batch function and its sense (accuracy: maximize; latency, FLOPs: minimize)."""

    name: str
    fn: BatchFn
    maximize: bool = False


class Counter:
    """Wraps a batch function and counts the rows it has evaluated."""

    def __init__(self, fn: BatchFn) -> None:
        self.fn = fn
        self.n = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        self.n += len(x)
        return np.asarray(self.fn(x), dtype=np.float64)


@dataclass(frozen=True)
class Front:
    """A Pareto front: candidates and their objective values in natural units and senses."""

    x: np.ndarray  # (K, D) int64, sorted by the first objective
    values: dict[str, np.ndarray]  # objective name -> (K,)
    n_evaluations: int  # distinct candidates this search evaluated
    seconds: float
    generations: int
    rows: int = 0  # rows looked up, repeats and archive hits included


@dataclass(frozen=True)
class Best:
    """The best feasible candidate of a constrained search (``x`` None if none was found)."""

    x: np.ndarray | None  # (D,) int64
    fitness: float
    constraint: float
    n_evaluations: int  # distinct candidates this search evaluated
    seconds: float
    generations: int
    history: list[float] = field(default_factory=list)  # best feasible fitness per generation
    rows: int = 0  # rows looked up, repeats and archive hits included
    constraint_rows: int = 0  # rows the cheap constraint was asked (feasibility checks)
    restarts: int = 0
    uniform_rows: int = 0  # evaluated rows drawn from the run's uniform feasible stream
