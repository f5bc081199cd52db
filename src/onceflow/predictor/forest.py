"""A fitted tree ensemble as plain arrays, with a batch evaluator fast enough for the search.

sklearn's ``HistGradientBoostingRegressor.predict`` walks every tree over every row in turn:
on the default space's 379 features that is ~12,000 archs/s on one core, while the search asks
the predictor for hundreds of thousands. :class:`Forest` takes the fitted trees out of sklearn
(``feature <= threshold`` goes left; the prediction is the baseline plus the sum of the reached
leaves' values) and evaluates them two ways, chosen by batch size:

* small batches (the evolution's populations): every tree at once, one level per step, over a
  ``(rows, trees)`` matrix of node indices; leaves loop onto themselves.
* large batches: each distinct split condition is computed once for all rows and packed 8 rows
  per byte; a tree is then a few dozen bitwise ops on those packed vectors (which rows reach
  each node, hence the bits of the reached leaf's index). The leaf indices of consecutive trees
  are concatenated into one byte (or 16 bits) per row, which indexes a table of the trees'
  summed leaf values: one gather per group of trees.

The arrays are the saved state, so a stored predictor needs no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from onceflow.errors import ConfigError

#: Batches at least this large take the bit-packed per-tree path.
PACKED_MIN_ROWS = 1024
_BLOCK_ROWS = 4096  # a multiple of 8
_MAX_INDEX_BITS = 16
_STATE_KEYS = ("feature", "threshold", "left", "right", "value", "roots", "baseline")


@dataclass(frozen=True)
class Forest:
    """Trees as flat node arrays (all trees concatenated; ``roots`` indexes each tree's root).

    A leaf has ``left == right == itself`` and ``threshold == +inf``; ``value`` is zero on
    internal nodes."""

    feature: np.ndarray  # (M,) int64
    threshold: np.ndarray  # (M,) float64
    left: np.ndarray  # (M,) int64
    right: np.ndarray  # (M,) int64
    value: np.ndarray  # (M,) float64
    roots: np.ndarray  # (T,) int64
    baseline: np.ndarray  # (1,) float64

    @classmethod
    def from_sklearn(cls, est) -> Forest:  # noqa: ANN001 (a fitted HistGradientBoostingRegressor)
        parts: list[tuple[np.ndarray, ...]] = []
        roots, offset = [], 0
        for iteration in est._predictors:  # noqa: SLF001 (no public accessor for the trees)
            (tree,) = iteration  # one tree per iteration for a regressor
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ConfigError("categorical splits are not supported by the exported forest")
            leaf = nodes["is_leaf"].astype(bool)
            own = np.arange(len(nodes), dtype=np.int64) + offset
            parts.append(
                (
                    np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64),
                    np.where(leaf, np.inf, nodes["num_threshold"]).astype(np.float64),
                    np.where(leaf, own, nodes["left"].astype(np.int64) + offset),
                    np.where(leaf, own, nodes["right"].astype(np.int64) + offset),
                    np.where(leaf, nodes["value"], 0.0).astype(np.float64),
                )
            )
            roots.append(offset)
            offset += len(nodes)
        cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
        base = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(1)  # noqa: SLF001
        return cls(*cols, roots=np.asarray(roots, dtype=np.int64), baseline=base)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _STATE_KEYS}

    @classmethod
    def from_state(cls, s: dict[str, np.ndarray]) -> Forest:
        missing = [k for k in _STATE_KEYS if k not in s]
        if missing:
            raise ConfigError(f"saved tree ensemble lacks arrays {missing}; refit the predictor")
        return cls(**{k: np.asarray(s[k]) for k in _STATE_KEYS})

    # ------------------------------------------------------------------ prediction
    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N,) float64 predictions for an (N, F) feature matrix."""
        X = np.ascontiguousarray(X)
        if len(X) >= PACKED_MIN_ROWS:
            return self._predict_packed(X)
        return self._predict_levels(X)

    def _tree_depths(self) -> np.ndarray:
        """(T,) each tree's depth (edges from the root to its deepest leaf)."""
        depth = np.zeros(len(self.feature), dtype=np.int64)
        # Children come after their parent in every tree, so one pass in index order suffices.
        for i in np.flatnonzero(self.left != np.arange(len(self.left))):
            depth[self.left[i]] = depth[self.right[i]] = depth[i] + 1
        tree = np.searchsorted(self.roots, np.arange(len(depth)), side="right") - 1
        out = np.zeros(len(self.roots), dtype=np.int64)
        np.maximum.at(out, tree, depth)
        return out

    def _predict_levels(self, X: np.ndarray) -> np.ndarray:
        """Walk all trees together, a level per step; at level d only the trees deeper than d
        (the leading columns: trees are ordered deepest first) still move."""
        roots, still_moving = self._levels
        n, width = X.shape
        node = np.broadcast_to(roots, (n, len(roots))).copy()
        flat_x = X.reshape(-1)
        row_start = (np.arange(n) * width)[:, None]
        for k in still_moving:
            at = node[:, :k]
            go_left = np.take(flat_x, row_start + self.feature[at]) <= self.threshold[at]
            node[:, :k] = np.where(go_left, self.left[at], self.right[at])
        return self.baseline[0] + self.value[node].sum(axis=1)

    def _predict_packed(self, X: np.ndarray) -> np.ndarray:
        n = len(X)
        plan = self._plan
        # Each distinct condition once for all rows, 8 rows per byte (in cache-sized row blocks).
        exact32 = X.dtype == np.float32
        thresholds = plan.cond_threshold32 if exact32 else plan.cond_threshold
        bits = np.empty(((n + 7) // 8, len(thresholds)), dtype=np.uint8)
        for i in range(0, n, _BLOCK_ROWS):
            block = X[i : i + _BLOCK_ROWS, plan.cond_feature]
            if not exact32:
                block = block.astype(np.float64)
            bits[i // 8 : (i + _BLOCK_ROWS + 7) // 8] = np.packbits(block <= thresholds, axis=0)
        bits = np.ascontiguousarray(bits.T)
        out = np.full(n, self.baseline[0])
        for group in plan.groups:
            # Horner: the group's leaf indices, tree after tree and bit after bit (MSB first),
            # as one integer per row; its table holds the sum of the reached leaves' values.
            index = np.zeros(n, dtype=group.table_index_dtype)
            for steps, n_bits in group.trees:
                for plane in _leaf_index_planes(steps, bits, n_bits):
                    index += index
                    if plane is not None:
                        index += np.unpackbits(plane, count=n)
            out += np.take(group.table, index)
        return out

    # Derived from the arrays on first use (a frozen dataclass without slots still has a
    # __dict__ for cached_property): fits during model selection mostly predict small batches.
    @cached_property
    def _levels(self) -> tuple[np.ndarray, list[int]]:
        """Roots ordered deepest tree first, and per level how many trees still move."""
        depths = self._tree_depths()
        order = np.argsort(-depths, kind="stable")
        return self.roots[order], [int((depths > d).sum()) for d in range(depths.max())]

    @cached_property
    def _plan(self) -> _PackedPlan:
        return _PackedPlan.build(self)


def _leaf_index_planes(
    steps: list[tuple[int, int, int, int, int]], bits: np.ndarray, n_bits: int
) -> list[np.ndarray | None]:
    """For one tree: bit planes (MSB first) of the index of the leaf each row reaches, packed
    like ``bits``; None for a plane no leaf sets."""
    reach: dict[int, np.ndarray | None] = {0: None}  # rows reaching a node; None: every row
    planes: list[np.ndarray | None] = [None] * n_bits
    for node, cond, left, right, leaf in steps:
        r = reach.pop(node)
        if cond < 0:
            for j in range(n_bits):
                if leaf >> (n_bits - 1 - j) & 1:
                    p = planes[j]
                    planes[j] = r if p is None else p | r
            continue
        go = bits[cond]
        reach[left] = go if r is None else r & go
        reach[right] = ~go if r is None else r & ~go
    return planes


@dataclass(frozen=True)
class _Group:
    """Consecutive trees whose leaf indices together fit one table index (<= 8 or 16 bits)."""

    trees: list[tuple[list[tuple[int, int, int, int, int]], int]]  # (steps, index bits)
    table: np.ndarray  # (2**bits,) sum of the trees' leaf values for each combined index

    @property
    def table_index_dtype(self) -> type:
        return np.uint8 if len(self.table) <= 256 else np.uint16

    @classmethod
    def build(cls, trees: list[tuple[list, int, np.ndarray]]) -> _Group:
        total = sum(n_bits for _, n_bits, _ in trees)
        index = np.arange(2**total)
        table = np.zeros(2**total)
        shift = total
        for _, n_bits, values in trees:
            shift -= n_bits
            padded = np.zeros(2**n_bits)
            padded[: len(values)] = values  # indices past the last leaf are never reached
            table += padded[(index >> shift) & (2**n_bits - 1)]
        return cls([(steps, n_bits) for steps, n_bits, _ in trees], table)


@dataclass(frozen=True)
class _PackedPlan:
    """The forest rearranged for the packed path: the distinct split conditions (sorted by
    feature), and the trees in groups, each tree as its nodes in parent-before-child order with
    node numbers local to the tree."""

    cond_feature: np.ndarray
    cond_threshold: np.ndarray
    cond_threshold32: np.ndarray  # largest float32 <= each threshold: same test on float32 data
    groups: list[_Group]

    @classmethod
    def build(cls, forest: Forest) -> _PackedPlan:
        m = len(forest.feature)
        is_leaf = forest.left == np.arange(m)
        pairs = sorted(
            {
                (int(forest.feature[i]), float(forest.threshold[i]))
                for i in range(m)
                if not is_leaf[i]
            }
        )
        cond_of = {p: i for i, p in enumerate(pairs)}
        ends = np.append(forest.roots[1:], m)
        trees = []
        for start, end in zip(forest.roots, ends, strict=True):
            steps, values = [], []
            for i in range(int(start), int(end)):
                if is_leaf[i]:
                    steps.append((i - start, -1, 0, 0, len(values)))
                    values.append(forest.value[i])
                else:
                    cond = cond_of[(int(forest.feature[i]), float(forest.threshold[i]))]
                    left, right = int(forest.left[i] - start), int(forest.right[i] - start)
                    steps.append((i - start, cond, left, right, -1))
            n_bits = int(np.ceil(np.log2(len(values))))
            if n_bits > _MAX_INDEX_BITS:
                raise ConfigError(
                    f"a tree with {len(values)} leaves is past the evaluator's "
                    f"{2**_MAX_INDEX_BITS}; lower predictor.gbm_max_leaf_nodes"
                )
            trees.append((steps, n_bits, np.asarray(values, dtype=np.float64)))
        t64 = np.asarray([t for _, t in pairs], dtype=np.float64)
        t32 = t64.astype(np.float32)
        t32 = np.where(t32.astype(np.float64) > t64, np.nextafter(t32, np.float32(-np.inf)), t32)
        return cls(
            cond_feature=np.asarray([f for f, _ in pairs], dtype=np.int64),
            cond_threshold=t64,
            cond_threshold32=t32,
            groups=_group_trees(trees),
        )


def _group_trees(trees: list[tuple[list, int, np.ndarray]]) -> list[_Group]:
    """Greedy runs of trees whose index bits sum to at most 8 (one byte), or 16 for trees too
    big for a byte."""
    groups, run, used = [], [], 0
    for tree in trees:
        limit = 8 if tree[1] <= 8 else _MAX_INDEX_BITS
        if run and used + tree[1] > limit:
            groups.append(_Group.build(run))
            run, used = [], 0
        run.append(tree)
        used += tree[1]
    if run:
        groups.append(_Group.build(run))
    return groups
