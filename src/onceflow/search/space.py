"""The categorical view of a search space that the engine works on, and vectorized variation.

A candidate is a row of int64 choice indices, one per dimension; a batch is an ``(N, D)`` array.
The engine never knows what a dimension means: objective and constraint functions receive the
batch and return one value per row. Everything here is numpy-vectorized over rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from onceflow.errors import ConfigError

# f(encoded (N, D) int64) -> (N,) float array. Objectives, constraints and predictors share it.
BatchFn = Callable[[np.ndarray], np.ndarray]


class _DimensionLike(Protocol):
    name: str
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class CategoricalSpace:
    """Dimensions by name with their number of choices; candidates are index rows."""

    names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    # Optional map of a batch to a canonical batch (e.g. zero the indices a candidate ignores),
    # applied after variation so that equivalent candidates are recognized as duplicates.
    canonicalize: BatchFn | None = None

    def __post_init__(self) -> None:
        if len(self.names) != len(self.cardinalities) or not self.names:
            raise ConfigError(
                f"search space: need one cardinality per dimension, got {len(self.names)} "
                f"names and {len(self.cardinalities)} cardinalities"
            )
        bad = [n for n, c in zip(self.names, self.cardinalities, strict=True) if c < 1]
        if bad:
            raise ConfigError(f"search space: dimensions {bad} have no choices")

    @classmethod
    def from_dimensions(
        cls, dims: Iterable[_DimensionLike], canonicalize: BatchFn | None = None
    ) -> CategoricalSpace:
        """Build from objects with ``.name`` and ``.choices`` (e.g. a supernet's dimensions)."""
        dims = list(dims)
        return cls(tuple(d.name for d in dims), tuple(len(d.choices) for d in dims), canonicalize)

    @property
    def n_dims(self) -> int:
        return len(self.cardinalities)

    @property
    def card(self) -> np.ndarray:
        """Cardinalities as an int64 array of shape (D,)."""
        return np.asarray(self.cardinalities, dtype=np.int64)

    def size(self) -> int:
        """Number of index rows (before canonicalization)."""
        return int(np.prod([int(c) for c in self.cardinalities], dtype=object))

    def canonical(self, x: np.ndarray) -> np.ndarray:
        return x if self.canonicalize is None else np.asarray(self.canonicalize(x), np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform random rows (each dimension independently uniform)."""
        u = rng.random((n, self.n_dims))
        return self.canonical(np.minimum((u * self.card).astype(np.int64), self.card - 1))

    def sample_spread(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Rows spread over the 'size' range: row i draws a level p_i ~ U(0, 1), then each
        dimension's index ~ Binomial(cardinality - 1, p_i). With dimensions ordered small to
        large this covers everything from the smallest to the largest candidates, where uniform
        sampling concentrates around the middle (many independent dimensions)."""
        p = rng.random((n, 1))
        x = rng.binomial(np.broadcast_to(self.card - 1, (n, self.n_dims)), p)
        return self.canonical(x.astype(np.int64))

    def sample_distinct(
        self,
        rng: np.random.Generator,
        n: int,
        *,
        exclude: Callable[[np.ndarray], np.ndarray] | None = None,
        accept: Callable[[np.ndarray], np.ndarray] | None = None,
        max_draws: int | None = None,
    ) -> np.ndarray:
        """Up to ``n`` distinct canonical rows drawn uniformly without replacement: the first
        ``n`` rows of a :class:`DistinctStream` (see there for ``exclude``, ``accept`` and
        ``max_draws``)."""
        return DistinctStream(self, rng).take(n, exclude=exclude, accept=accept,
                                              max_draws=max_draws)  # fmt: skip

    def extremes(self) -> np.ndarray:
        """The all-smallest and the all-largest rows, shape (2, D)."""
        return self.canonical(np.stack([np.zeros(self.n_dims, np.int64), self.card - 1]))

    def mutate(self, rng: np.random.Generator, x: np.ndarray, prob: float) -> np.ndarray:
        """Each index is replaced, with probability ``prob``, by a different random choice.
        At least one index of every row changes (where any dimension has > 1 choice)."""
        n, d = x.shape
        card = self.card
        mask = (rng.random((n, d)) < prob) & (card > 1)
        # Force one mutation per row so that no child is a plain copy.
        free = np.flatnonzero(card > 1)
        if free.size:
            forced = free[rng.integers(0, free.size, n)]
            mask[np.arange(n), forced] = True
        # A different choice: shift by 1..card-1 modulo card.
        shift = 1 + (rng.random((n, d)) * np.maximum(card - 1, 1)).astype(np.int64)
        out = np.where(mask, (x + shift) % card, x)
        return self.canonical(out)

    def crossover_mask(
        self, rng: np.random.Generator, n: int, two_point_share: float
    ) -> np.ndarray:
        """(n, D) bool: which indices a child takes from its first parent. Uniform (each index
        1/2), except ``two_point_share`` of the rows, which take one contiguous run of indices
        [lo, hi) from the first parent and the rest from the second: blocks of neighbouring
        dimensions (a stage's depth and its layers' choices) travel together."""
        m = rng.random((n, self.n_dims)) < 0.5
        if two_point_share <= 0:  # uniform only (the same draws as before the option)
            return m
        two = rng.random(n) < two_point_share
        if two.any():
            cut = np.sort(rng.integers(0, self.n_dims + 1, (int(two.sum()), 2)), axis=1)
            i = np.arange(self.n_dims)
            m[two] = (i >= cut[:, :1]) & (i < cut[:, 1:])
        return m

    def crossover(self, rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Uniform crossover: each index from ``a`` or ``b`` with probability 1/2."""
        return self.canonical(np.where(rng.random(a.shape) < 0.5, a, b))

    def enumerate_all(self, limit: int = 1_000_000) -> np.ndarray:
        """Every row of a small space (for tests and exact references); refuses big spaces."""
        if self.size() > limit:
            raise ConfigError(
                f"search space has {self.size()} rows, more than {limit} to enumerate"
            )
        grids = np.meshgrid(*[np.arange(c) for c in self.cardinalities], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)


SMALL_SPACE = 4_000_000  # rows: drawn from a permutation (every row reachable)


class DistinctStream:
    """Uniform canonical rows without replacement, taken as a run asks for them: the rows taken
    over every call are one uniform sample without replacement (of the accepted rows), the same
    rows, in the same order, as one ``sample_distinct`` call with the same generator state.

    Small spaces (<= 4M rows) walk a random permutation, so every row is reachable and the
    stream ends with the space; big ones draw uniform rows and reject repeats. Rows drawn but
    not yet looked at wait for the next call (none is skipped between calls)."""

    def __init__(self, space: CategoricalSpace, rng: np.random.Generator) -> None:
        self.space, self.rng = space, rng
        self.size = space.size()
        self.small = self.size <= SMALL_SPACE
        self.perm = rng.permutation(self.size) if self.small else None
        self.drawn = 0  # rows drawn from the permutation / generator
        self.pending = np.zeros((0, space.n_dims), np.int64)  # drawn, not looked at yet
        self.seen: set[bytes] = set()  # rows taken
        self.looked = 0  # rows looked at (taken, excluded, refused or repeated)

    @property
    def ended(self) -> bool:
        return self.small and self.drawn >= self.size and not len(self.pending)

    def _draw(self, m: int) -> np.ndarray:
        if self.small:
            assert self.perm is not None
            m = min(m, self.size - self.drawn)
            idx = self.perm[self.drawn : self.drawn + m]
            x = np.stack(np.unravel_index(idx, self.space.cardinalities), 1).astype(np.int64)
            x = self.space.canonical(x)
        else:
            x = self.space.sample(self.rng, m)
        self.drawn += m
        return x

    def take(
        self,
        n: int,
        *,
        exclude: Callable[[np.ndarray], np.ndarray] | None = None,
        accept: Callable[[np.ndarray], np.ndarray] | None = None,
        max_draws: int | None = None,
    ) -> np.ndarray:
        """The next up to ``n`` rows. ``exclude(x) -> bool mask`` passes over rows known
        already (e.g. an archive's ``contains``); ``accept(x) -> bool mask`` keeps only
        acceptable rows (e.g. feasible under a cheap constraint). A big space looks at most
        ``max_draws`` rows per call (default 50 n + 10,000)."""
        limit = max_draws if max_draws is not None else 50 * n + 10_000
        out: list[np.ndarray] = []
        got, looked = 0, 0
        while got < n and not self.ended and (self.small or looked < limit):
            if not len(self.pending):
                m = max(2 * (n - got), 256)
                self.pending = self._draw(m if self.small else min(m, limit - looked))
            x, self.pending = self.pending, self.pending[:0]
            keep = np.ones(len(x), bool)
            if exclude is not None:
                keep &= ~np.asarray(exclude(x), bool)
            if accept is not None and keep.any():
                keep[keep] = np.asarray(accept(x[keep]), bool)
            used = len(x)
            for i in np.flatnonzero(keep):
                k = x[i].tobytes()
                if k not in self.seen:
                    self.seen.add(k)
                    out.append(x[i])
                    got += 1
                    if got == n:
                        used = i + 1
                        break
            self.pending = x[used:]  # looked at again (and tested again) next call
            looked += used
        self.looked += looked
        return np.stack(out) if out else np.zeros((0, self.space.n_dims), np.int64)


def unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of ``x`` in first-seen order, and their indices into ``x``."""
    if len(x) == 0:
        return x, np.zeros(0, np.int64)
    _, idx = np.unique(x, axis=0, return_index=True)
    idx = np.sort(idx)
    return x[idx], idx
