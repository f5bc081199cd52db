"""Per-layer costs of every subnet, as dense tables gathered from the categorical encoding.

A block position's layer is fixed by six choices: its stage's depth (whether it runs at all),
the resolution, its input and output widths, its kernel and its expand ratio. For each position
a cost (latency from a LUT, MACs, parameters) is unrolled once into a dense array over those six
choice indices, inactive entries (the stage too shallow to reach it) holding 0. The flat index
into the concatenated tables is linear in the encoded columns, so a batch of ``(N, D)`` encoded
archs turns into the ``(N, n_blocks)`` indices with one small matrix product, then one gather
per cost: the latency estimator and the predictor's derived features both sum costs this way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from onceflow.supernet.space import SearchSpace
from onceflow.supernet.specs import LayerSpec


class BlockTables:
    """Named per-block cost tables of ``space`` sharing one index (see the module docstring)."""

    def __init__(self, space: SearchSpace, **costs: Callable[[LayerSpec], float]) -> None:
        col = {d.name: i for i, d in enumerate(space.dimensions())}
        res, ws, ks, es = space.resolutions, space.widths, space.kernels, space.expands
        tables: dict[str, list[np.ndarray]] = {name: [] for name in costs}
        weights = np.zeros((len(col), space.n_blocks))
        offsets = np.zeros(space.n_blocks)
        off = 0
        for b in range(space.n_blocks):
            s = space.block_stage[b]
            st = space.stages[s]
            first = b == st.first_block
            pos = b - st.first_block
            shape = (len(st.depths), len(res), len(ws), len(ws), len(ks), len(es))
            per_cost = {name: np.zeros(shape) for name in costs}
            for (di, d), (ri, r), (wi, w_in), (wo, w_out), (ki, k), (ei, e) in itertools.product(
                enumerate(st.depths),
                enumerate(res),
                enumerate(ws),
                enumerate(ws),
                enumerate(ks),
                enumerate(es),
            ):
                if d <= pos:
                    continue
                # Non-first blocks take the stage's own width (w_in == w_out in the encoding).
                w_eff = w_in if (first and s > 0) else w_out
                spec = space.block_spec(b, r, w_eff, w_out, k, e)
                for name, fn in costs.items():
                    per_cost[name][di, ri, wi, wo, ki, ei] = fn(spec)
            for name in costs:
                tables[name].append(per_cost[name].ravel())
            strides = np.cumprod((1, *shape[:0:-1]))[::-1]  # row-major strides of `shape`
            c_win = col[f"width.s{s - 1}"] if (first and s > 0) else col[f"width.s{s}"]
            for c, stride in zip(
                (
                    col[f"depth.s{s}"],
                    col["resolution"],
                    c_win,
                    col[f"width.s{s}"],
                    col[f"kernel.b{b}"],
                    col[f"expand.b{b}"],
                ),
                strides,
                strict=True,
            ):
                weights[c, b] += stride  # += : a non-first block's w_in and w_out share a column
            offsets[b] = off
            off += int(np.prod(shape))
        self.values = {name: np.concatenate(t) for name, t in tables.items()}
        self._weights, self._offsets = weights, offsets

    def index(self, x: np.ndarray) -> np.ndarray:
        """(N, n_blocks) flat indices for (N, D) choice indices. float64 BLAS is exact here (the
        tables are far below 2**53 entries) and much faster than an integer product."""
        return (x.astype(np.float64) @ self._weights + self._offsets).astype(np.intp)

    def sums(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Each cost summed over the block positions: name -> (N,) float64."""
        idx = self.index(x)
        return {name: np.take(v, idx).sum(axis=1) for name, v in self.values.items()}
