"""Features of encoded archs for the accuracy predictor, vectorized over batches.

Input is the supernet's categorical encoding, an ``(N, D)`` int64 matrix of choice indices (one
column per ``SearchSpace.dimensions()`` entry). Features:

* one-hot per dimension (resolution, depth and width per stage, kernel and expand per block
  position), where the kernel/expand one-hots of skipped blocks (beyond the stage's depth) are
  all zero, so equivalent encodings get equal features;
* derived: log MACs and log parameter count of the subnet, from per-block dense tables over the
  choices that determine each layer (stem, every block position, head) -- a gather and a sum;
* per-resolution: every feature above except the resolution one-hot again, once per resolution
  (zero unless the arch runs at that resolution). A weight-sharing supernet trains each input
  resolution on a different mix of subnets, so how much a choice is worth depends on the
  resolution (on the default space a small subnet loses 4 points at 24 px against 20 px, while
  large ones gain from 28 px); these crossed features let even a linear model express that.

The :class:`ArchEncoder` holds only arrays, so it is rebuilt from the space on load and checked
against the saved layout.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from onceflow.errors import ConfigError
from onceflow.supernet.space import LayerSpec, SearchSpace


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


@dataclass(frozen=True)
class _CostTable:
    """A per-layer cost summed over an arch, as dense per-position tables."""

    stem: np.ndarray  # (n_res,)
    head: np.ndarray  # (n_res, n_width)
    blocks: np.ndarray  # flat; block b's (depth, res, w_in, w_out, k, e) table at offsets[b]


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
        self.per_resolution = per_resolution
        if self.names[0] != "resolution":
            raise ConfigError(f"the encoding starts with the resolution, got {self.names[0]!r}")
        self.n_res = int(self.cards[0])
        col = {n: i for i, n in enumerate(self.names)}
        # Gated columns (kernel/expand of block b) and what gates them: the stage's depth column
        # and the block's position in its stage (active iff depth value > position).
        gated, gate_col, gate_pos = [], [], []
        for b in range(space.n_blocks):
            s = space.block_stage[b]
            for kind in ("kernel", "expand"):
                gated.append(col[f"{kind}.b{b}"])
                gate_col.append(col[f"depth.s{s}"])
                gate_pos.append(b - space.stages[s].first_block)
        self._gated = np.asarray(gated, dtype=np.int64)
        self._gate_col = np.asarray(gate_col, dtype=np.int64)
        self._gate_pos = np.asarray(gate_pos, dtype=np.int64)
        max_card = int(self.cards.max())
        self._depth_value = np.zeros((len(self.names), max_card), dtype=np.int64)
        for s, st in enumerate(space.stages):
            self._depth_value[col[f"depth.s{s}"], : len(st.depths)] = st.depths
        self._space = space
        self._col = col
        self._macs = self._cost_table(layer_macs)
        self._params = self._cost_table(layer_params)
        self._n_base = self.n_onehot + (2 if derived else 0)
        crossed = self.n_res * (self._n_base - self.n_res) if per_resolution else 0
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
        """(N, |gated|) bool: whether each gated column's block runs."""
        depth = self._depth_value[self._gate_col[None, :], x[:, self._gate_col]]
        return depth > self._gate_pos[None, :]

    def canonicalize(self, x: np.ndarray) -> np.ndarray:
        """Zero the kernel/expand indices of skipped blocks (``SearchSpace.encode``'s form)."""
        x = np.array(x, dtype=np.int64, copy=True)
        x[:, self._gated] *= self.active(x)
        return x

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ConfigError(f"encoded archs must be (N, {len(self.names)}), got {x.shape}")
        return x

    def onehot(self, x: np.ndarray) -> np.ndarray:
        """(N, sum of cards) float32; skipped blocks' kernel/expand groups are all zero."""
        return self._encode(self._check(x), 0)

    def features(self, x: np.ndarray) -> np.ndarray:
        """(N, n_features) float32: one-hot, then log10 MACs and log10 params if derived, then
        (if per_resolution) everything but the resolution one-hot crossed with it."""
        x = self._check(x)
        out = self._encode(x, self.n_features - self.n_onehot)
        if self.derived:
            macs, params = self._costs(x)
            out[:, self.n_onehot] = np.log10(macs)
            out[:, self.n_onehot + 1] = np.log10(params)
        if self.per_resolution:
            width = self._n_base - self.n_res
            rest = out[:, self.n_res : self._n_base]
            rows = np.arange(len(x))
            for r in range(self.n_res):  # one block per resolution; only the arch's is filled
                sel = rows[x[:, 0] == r]
                start = self._n_base + r * width
                out[sel, start : start + width] = rest[sel]
        return out

    def _encode(self, x: np.ndarray, extra: int) -> np.ndarray:
        n = len(x)
        out = np.zeros((n, self.n_onehot + extra), dtype=np.float32)
        val = np.ones(x.shape, dtype=np.float32)
        val[:, self._gated] = self.active(x)
        out[np.arange(n)[:, None], self.offsets[None, :] + x] = val
        return out

    # ------------------------------------------------------------------ derived costs
    def macs(self, x: np.ndarray) -> np.ndarray:
        """Multiply-accumulates per arch (float64)."""
        return self._costs(self._check(x))[0]

    def params(self, x: np.ndarray) -> np.ndarray:
        """Parameter count per arch (float64)."""
        return self._costs(self._check(x))[1]

    def _cost_table(self, fn) -> _CostTable:  # noqa: ANN001 (LayerSpec -> float)
        sp = self._space
        res, ws, ks, es = sp.resolutions, sp.widths, sp.kernels, sp.expands
        stem = np.array([fn(sp.stem_spec(r)) for r in res])
        head = np.array([[fn(sp.head_spec(r, w)) for w in ws] for r in res])
        tables = []
        for b in range(sp.n_blocks):
            s = sp.block_stage[b]
            st = sp.stages[s]
            first = b == st.first_block
            pos = b - st.first_block
            t = np.zeros((len(st.depths), len(res), len(ws), len(ws), len(ks), len(es)))
            for (di, d), (ri, r), (wi, w_in), (wo, w_out), (ki, k), (ei, e) in itertools.product(
                enumerate(st.depths),
                enumerate(res),
                enumerate(ws),
                enumerate(ws),
                enumerate(ks),
                enumerate(es),
            ):
                if d > pos:
                    w_eff = w_in if (first and s > 0) else w_out
                    t[di, ri, wi, wo, ki, ei] = fn(sp.block_spec(b, r, w_eff, w_out, k, e))
            tables.append(t)
        self._block_shapes = [t.shape for t in tables]
        return _CostTable(stem, head, np.concatenate([t.ravel() for t in tables]))

    def _costs(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(MACs, params) per arch: stem + head + a gather per block position."""
        sp, col = self._space, self._col
        r = x[:, col["resolution"]]
        w_last = x[:, col[f"width.s{sp.n_stages - 1}"]]
        totals = []
        for t in (self._macs, self._params):
            totals.append(t.stem[r] + t.head[r, w_last])
        off = 0
        for b, shape in enumerate(self._block_shapes):
            s = sp.block_stage[b]
            first = b == sp.stages[s].first_block
            c_win = col[f"width.s{s - 1}"] if (first and s > 0) else col[f"width.s{s}"]
            idx = off + np.ravel_multi_index(
                (
                    x[:, col[f"depth.s{s}"]],
                    r,
                    x[:, c_win],
                    x[:, col[f"width.s{s}"]],
                    x[:, col[f"kernel.b{b}"]],
                    x[:, col[f"expand.b{b}"]],
                ),
                shape,
            )
            totals[0] += self._macs.blocks[idx]
            totals[1] += self._params.blocks[idx]
            off += int(np.prod(shape))
        return totals[0], totals[1]
