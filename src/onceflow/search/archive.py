"""Every distinct candidate one search has evaluated, shared by all of its phases.

The engine assumes that evaluating a candidate may be expensive (a measurement, a training run):
a candidate is evaluated once, and every later lookup of it, by any phase, is answered from the
archive. An optional budget bounds the number of distinct candidates evaluated; what the budget
counts is ``n`` (distinct candidates), while ``rows`` counts every row looked up, repeats
included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from onceflow.errors import ConfigError
from onceflow.search.space import BatchFn


@dataclass(frozen=True)
class Lookup:
    """Values of the rows asked for; ``ok`` is False for rows left unevaluated (budget spent)."""

    values: dict[str, np.ndarray]  # name -> (N,) float64, NaN where not ok
    ok: np.ndarray  # (N,) bool

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


class Archive:
    """Distinct rows evaluated so far with every function's value, under an optional budget.

    ``fns`` are all evaluated on each new distinct row (one "measurement" yields them all).
    Rows must already be canonical (``CategoricalSpace.canonical``): equal rows are equal
    candidates."""

    def __init__(self, fns: Mapping[str, BatchFn], max_evaluations: int | None = None) -> None:
        if not fns:
            raise ConfigError("archive: need at least one function to evaluate")
        if max_evaluations is not None and max_evaluations < 1:
            raise ConfigError(f"max_evaluations must be >= 1 (got {max_evaluations})")
        self.fns = dict(fns)
        self.max_evaluations = max_evaluations
        self._index: dict[bytes, int] = {}
        self._x: np.ndarray | None = None  # (capacity, D) int64, first n rows used
        self._v: dict[str, np.ndarray] = {}
        self.n = 0  # distinct rows evaluated
        self.rows = 0  # rows looked up, repeats included

    # ------------------------------------------------------------------ state
    @property
    def remaining(self) -> float:
        """Distinct evaluations left under the budget (inf without one)."""
        return float("inf") if self.max_evaluations is None else self.max_evaluations - self.n

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0

    @property
    def x(self) -> np.ndarray:
        """(n, D) every distinct row, in the order evaluated."""
        return self._x[: self.n] if self._x is not None else np.zeros((0, 0), np.int64)

    def value(self, name: str) -> np.ndarray:
        """(n,) the values of ``name`` for :attr:`x`."""
        return self._v[name][: self.n] if self._v else np.zeros(0)

    @staticmethod
    def _keys(x: np.ndarray) -> list[bytes]:
        x = np.ascontiguousarray(x, dtype=np.int64)
        return [r.tobytes() for r in x]

    def contains(self, x: np.ndarray) -> np.ndarray:
        """(N,) bool: which rows were evaluated already."""
        return np.fromiter((k in self._index for k in self._keys(x)), bool, len(x))

    def novel(self, x: np.ndarray) -> np.ndarray:
        """The distinct rows of ``x`` not evaluated yet, in first-seen order."""
        seen: set[bytes] = set()
        keep = []
        for i, k in enumerate(self._keys(x)):
            if k not in self._index and k not in seen:
                seen.add(k)
                keep.append(i)
        return x[np.asarray(keep, np.int64)]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, x: np.ndarray, limit: float | None = None) -> Lookup:
        """Values of every row of ``x`` ((N, D) int64). New distinct rows are evaluated (in
        first-seen order) while the budget lasts, and at most ``limit`` of them in this call;
        the rest come back with ``ok`` False."""
        x = np.atleast_2d(np.asarray(x, dtype=np.int64))
        n = len(x)
        self.rows += n
        keys = self._keys(x)
        idx = np.full(n, -1, np.int64)
        new_pos: dict[bytes, int] = {}
        new_rows: list[int] = []
        cap = self.remaining if limit is None else min(self.remaining, limit)
        for i, k in enumerate(keys):
            j = self._index.get(k)
            if j is not None:
                idx[i] = j
            elif k in new_pos:
                idx[i] = new_pos[k]
            elif len(new_rows) < cap:
                new_pos[k] = self.n + len(new_rows)
                new_rows.append(i)
                idx[i] = new_pos[k]
        if new_rows:
            self._append(x[np.asarray(new_rows)])
            for k, j in new_pos.items():
                self._index[k] = j
        ok = idx >= 0
        safe = np.where(ok, idx, 0)
        values = {}
        for name in self.fns:
            v = self._v[name][safe] if self._v else np.zeros(n)
            values[name] = np.where(ok, v, np.nan)
        return Lookup(values, ok)

    def _append(self, rows: np.ndarray) -> None:
        vals = {name: np.asarray(fn(rows), np.float64).reshape(-1) for name, fn in self.fns.items()}
        for name, v in vals.items():
            if len(v) != len(rows):
                raise ConfigError(
                    f"search function {name!r} returned {len(v)} values for {len(rows)} rows"
                )
        need = self.n + len(rows)
        if self._x is None or need > len(self._x):
            cap = max(need, 2 * (0 if self._x is None else len(self._x)), 256)
            x = np.zeros((cap, rows.shape[1]), np.int64)
            v = {name: np.zeros(cap) for name in self.fns}
            if self._x is not None:
                x[: self.n] = self._x[: self.n]
                for name in self.fns:
                    v[name][: self.n] = self._v[name][: self.n]
            self._x, self._v = x, v
        self._x[self.n : need] = rows
        for name in self.fns:
            self._v[name][self.n : need] = vals[name]
        self.n = need

    def fn(self, name: str, limit: float | None = None) -> BatchFn:
        """A batch function of ``name`` answered through the archive (NaN for rows left out
        by the budget)."""

        def f(x: np.ndarray) -> np.ndarray:
            return self.evaluate(x, limit)[name]

        return f
