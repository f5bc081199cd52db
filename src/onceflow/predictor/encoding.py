"""Features of encoded archs for the accuracy predictor, vectorized over batches.

Input is the supernet's categorical encoding, an ``(N, D)`` int64 matrix of choice indices (one
column per ``SearchSpace.dimensions()`` entry). Features:

* one-hot per dimension (resolution, depth and width per stage, kernel and expand per block
  position), where the kernel/expand one-hots of skipped blocks (beyond the stage's depth) are
  all zero, so equivalent encodings get equal features;
* derived: log MACs and log parameter count of the subnet, from per-block dense tables over the
  choices that determine each layer (stem, every block position, head) -- a gather and a sum;
* per-resolution: every feature above except the resolution one-hot again, once per resolution
  (zero unless the arch runs at that resolution); skipped when the space has one resolution.
  A weight-sharing supernet trains each input
  resolution on a different mix of subnets, so how much a choice is worth depends on the
  resolution (on the default space a small subnet loses 4 points at 24 px against 20 px, while
  large ones gain from 28 px); these crossed features let even a linear model express that.

The :class:`ArchEncoder` holds only arrays, so it is rebuilt from the space on load and checked
against the saved layout.
"""

from __future__ import annotations

import numpy as np

from onceflow.errors import ConfigError
from onceflow.supernet.space import SearchSpace
from onceflow.supernet.specs import LayerSpec
from onceflow.supernet.tables import BlockTables


def layer_macs(spec: LayerSpec) -> float:
    """Multiply-accumulates of one static layer (convs and linears; BN/activations ignored)."""
    o = spec.out_res
    if spec.kind == "stem":
        return float(o * o * spec.kernel**2 * spec.in_ch * spec.out_ch)
    if spec.kind == "head":
        return float(spec.in_res**2 * spec.in_ch * spec.mid_ch + spec.mid_ch * spec.out_ch)
    macs = spec.in_res**2 * spec.in_ch * spec.mid_ch  # expand 1x1
    macs += o * o * spec.kernel**2 * spec.mid_ch  # depthwise
    macs += 2 * spec.mid_ch * spec.se_ch  # squeeze-excite
    macs += o * o * spec.mid_ch * spec.out_ch  # project 1x1
    return float(macs)


def layer_params(spec: LayerSpec) -> float:
    """Weights of one static layer (convs, linears, BN affine)."""
    if spec.kind == "stem":
        return float(spec.kernel**2 * spec.in_ch * spec.out_ch + 2 * spec.out_ch)
    if spec.kind == "head":
        return float(spec.in_ch * spec.mid_ch + 2 * spec.mid_ch + (spec.mid_ch + 1) * spec.out_ch)
    p = spec.in_ch * spec.mid_ch + spec.kernel**2 * spec.mid_ch + spec.mid_ch * spec.out_ch
    p += 2 * spec.mid_ch * spec.se_ch + spec.se_ch + spec.mid_ch  # SE with biases
    p += 2 * (2 * spec.mid_ch + spec.out_ch)  # BN affine
    return float(p)


class ArchEncoder:
    """Turns ``(N, D)`` choice-index matrices into predictor features (float32)."""

    def __init__(
        self, space: SearchSpace, derived: bool = True, per_resolution: bool = False
    ) -> None:
        dims = space.dimensions()
        self.names = tuple(d.name for d in dims)
        self.cards = np.asarray([len(d.choices) for d in dims], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.cards)[:-1]]).astype(np.int64)
        self.n_onehot = int(self.cards.sum())
        self.derived = derived
        if self.names[0] != "resolution":
            raise ConfigError(f"the encoding starts with the resolution, got {self.names[0]!r}")
        self.n_res = int(self.cards[0])
        # With one resolution the crossing would only duplicate every feature.
        self.per_resolution = per_resolution and self.n_res > 1
        col = {n: i for i, n in enumerate(self.names)}
        # Block b runs iff its stage's depth exceeds b's position in the stage; its kernel and
        # expand columns (gated) are then live. SearchSpace.dimensions() puts kernel.b0.. and
        # expand.b0.. in two contiguous runs.
        n_blocks = space.n_blocks
        self._kernel0, self._expand0 = col["kernel.b0"], col["expand.b0"]
        runs = [f"{k}.b{b}" for k in ("kernel", "expand") for b in range(n_blocks)]
        if list(self.names[self._kernel0 : self._kernel0 + 2 * n_blocks]) != runs:
            raise ConfigError("the encoding must hold kernel.b* then expand.b* as contiguous runs")
        self._gated = np.asarray(
            [col[f"{k}.b{b}"] for b in range(n_blocks) for k in ("kernel", "expand")]
        )
        max_card = int(self.cards.max())
        self._stage_depth_col = np.asarray([col[f"depth.s{i}"] for i in range(space.n_stages)])
        depth_value = np.zeros((space.n_stages, max_card), dtype=np.int64)
        for i, st in enumerate(space.stages):
            depth_value[i, : len(st.depths)] = st.depths
        self._depth_value_flat = depth_value.reshape(-1)
        self._stage_base = np.arange(space.n_stages) * max_card
        self._blocks_per_stage = np.asarray([st.max_depth for st in space.stages])
        self._block_pos = np.asarray(
            [b - space.stages[space.block_stage[b]].first_block for b in range(n_blocks)]
        )
        self._space = space
        self._col = col
        self._tables = BlockTables(space, macs=layer_macs, params=layer_params)
        res, ws = space.resolutions, space.widths
        costs = (("macs", layer_macs), ("params", layer_params))
        self._stem = {k: np.array([fn(space.stem_spec(r)) for r in res]) for k, fn in costs}
        self._head = {
            k: np.array([[fn(space.head_spec(r, w)) for w in ws] for r in res]) for k, fn in costs
        }
        self._n_base = self.n_onehot + (2 if derived else 0)
        crossed = self.n_res * (self._n_base - self.n_res) if self.per_resolution else 0
        self.n_features = self._n_base + crossed

    # ------------------------------------------------------------------ layout
    def layout(self) -> dict:
        """What the saved predictor records to check it is used with the same space."""
        return {
            "names": list(self.names),
            "cards": self.cards.tolist(),
            "derived": self.derived,
            "per_resolution": self.per_resolution,
        }

    @classmethod
    def from_layout(cls, space: SearchSpace, layout: dict) -> ArchEncoder:
        """The encoder a saved predictor was fitted with, checked against ``space``."""
        enc = cls(
            space,
            derived=bool(layout.get("derived", True)),
            per_resolution=bool(layout.get("per_resolution", False)),
        )
        enc.check_layout(layout)
        return enc

    def check_layout(self, layout: dict) -> None:
        if layout.get("names") != list(self.names) or layout.get("cards") != self.cards.tolist():
            raise ConfigError(
                "the saved predictor was trained on a different search space (dimension names or "
                "choice counts differ from models/supernet/space.json); rerun `dvc repro predictor`"
            )

    # ------------------------------------------------------------------ encoding
    def active(self, x: np.ndarray) -> np.ndarray:
        """(N, 2 * n_blocks) bool: whether each gated column (kernel.b0, expand.b0, kernel.b1,
        ...) belongs to a block that runs."""
        return np.repeat(self._blocks_active(x), 2, axis=1)

    def _blocks_active(self, x: np.ndarray) -> np.ndarray:
        """(N, n_blocks) bool: whether each block position runs (its stage is deep enough)."""
        depth_index = x[:, self._stage_depth_col] + self._stage_base
        depth = np.take(self._depth_value_flat, depth_index)
        return np.repeat(depth, self._blocks_per_stage, axis=1) > self._block_pos

    def canonicalize(self, x: np.ndarray) -> np.ndarray:
        """Zero the kernel/expand indices of skipped blocks (``SearchSpace.encode``'s form)."""
        x = np.array(x, dtype=np.int64, copy=True)
        live = self._blocks_active(x)
        nb = live.shape[1]
        x[:, self._kernel0 : self._kernel0 + nb] *= live
        x[:, self._expand0 : self._expand0 + nb] *= live
        return x

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ConfigError(f"encoded archs must be (N, {len(self.names)}), got {x.shape}")
        if (x.view(np.uint64) >= self.cards.view(np.uint64)).any():  # negatives wrap around
            row, c = np.argwhere((x < 0) | (x >= self.cards))[0]
            raise ConfigError(
                f"encoded arch row {row}: {self.names[c]} index {x[row, c]} is out of range "
                f"(0..{self.cards[c] - 1})"
            )
        return x

    def onehot(self, x: np.ndarray) -> np.ndarray:
        """(N, sum of cards) float32; skipped blocks' kernel/expand groups are all zero."""
        return self._scatter(self._check(x), self.n_onehot, derived=False, per_resolution=False)

    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, n_features) float32: one-hot, then log10 MACs and log10 params if derived, then
        (if per_resolution) everything but the resolution one-hot crossed with it.

        Built as one scatter of every row's non-zero entries (their columns and values laid out
        side by side first), which is what makes it fast on the search's big batches."""
        return self._scatter(self._check(x), self.n_features, self.derived, self.per_resolution)

    def _scatter(self, x: np.ndarray, w: int, derived: bool, per_resolution: bool) -> np.ndarray:
        """(N, w) float32 built with one scatter of every row's non-zero entries."""
        n, d = x.shape
        k = d + (2 if derived else 0)  # non-zeros of the plain features per row
        per_row = k + (k - 1 if per_resolution else 0)
        itype = np.int32 if n * w < 2**31 else np.int64
        cols = np.empty((n, per_row), dtype=itype)
        vals = np.empty((n, per_row), dtype=np.float32)
        cols[:, :d] = x
        cols[:, :d] += self.offsets.astype(itype)
        vals[:, :d] = self._values(x)
        if derived:
            macs, params = self._costs(x)
            cols[:, d : d + 2] = self.n_onehot + np.arange(2)
            vals[:, d] = np.log10(macs)
            vals[:, d + 1] = np.log10(params)
        if per_resolution:
            # Feature j >= n_res again at n_base + r * width + (j - n_res), r the arch's
            # resolution: the same values (all but the resolution's) a second time, shifted.
            width = self._n_base - self.n_res
            shift = (x[:, 0] * width + (self._n_base - self.n_res)).astype(itype)
            np.add(cols[:, 1:k], shift[:, None], out=cols[:, k:])
            vals[:, k:] = vals[:, 1:k]
        cols += (np.arange(n, dtype=itype) * w)[:, None]
        out = np.zeros((n, w), dtype=np.float32)
        out.reshape(-1)[cols] = vals
        return out

    def _values(self, x: np.ndarray) -> np.ndarray:
        """(N, D) float32: 1 for each dimension's chosen one-hot, 0 where the block is skipped."""
        val = np.ones(x.shape, dtype=np.float32)
        live = self._blocks_active(x)
        nb = live.shape[1]
        val[:, self._kernel0 : self._kernel0 + nb] = live
        val[:, self._expand0 : self._expand0 + nb] = live
        return val

    # ------------------------------------------------------------------ derived costs
    def macs(self, x: np.ndarray) -> np.ndarray:
        """Multiply-accumulates per arch (float64)."""
        return self._costs(self._check(x))[0]

    def params(self, x: np.ndarray) -> np.ndarray:
        """Parameter count per arch (float64)."""
        return self._costs(self._check(x))[1]

    def _costs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(MACs, params) per arch: stem + head + a gather per block position."""
        r = x[:, 0]
        w_last = x[:, self._col[f"width.s{self._space.n_stages - 1}"]]
        blocks = self._tables.sums(x)
        macs, params = (
            self._stem[k][r] + self._head[k][r, w_last] + blocks[k] for k in ("macs", "params")
        )
        return macs, params
