"""The latency estimator the search uses: calibrated LUT sums over encoded archs, vectorized.

For every block position b the LUT is unrolled once into a dense array over the choice indices
that determine b's layer (resolution, input width, output width, kernel, expand), with skipped
blocks (beyond their stage's depth) folded in as an extra "inactive" row holding 0. Predicting a
batch of encoded archs ``(N, D) int64`` is then one fancy-indexing gather of shape (N, n_blocks)
into a flat array, a few column gathers for stem and head, row sums and the calibration's dot
product: no Python loop over archs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onceflow.errors import ConfigError
from onceflow.io import read_json
from onceflow.latency.calibration import Calibration
from onceflow.latency.lut import LUT_FILE, Lut
from onceflow.supernet.space import Arch, SearchSpace

ESTIMATOR_FILE = "estimator.json"
ESTIMATOR_SCHEMA_VERSION = 1


MIN_LATENCY_MS = 1e-4  # floor for calibrated predictions (ms)


class LatencyEstimator:
    """Predicts end-to-end latency (ms) of archs of ``space`` on the LUT's target."""

    def __init__(self, space: SearchSpace, lut: Lut, calibration: Calibration | None = None):
        self.space, self.lut = space, lut
        self.calibration = calibration or Calibration("none", ("sum",), (1.0,))
        self.overhead_ms = lut.overhead.median
        self._build_tables()

    def _entry(self, spec: object) -> float:
        # An isolated entry includes one inference call's fixed cost; a network pays it once.
        return self.lut.latency(spec) - self.overhead_ms

    def _build_tables(self) -> None:
        sp = self.space
        names = [d.name for d in sp.dimensions()]
        col = {n: i for i, n in enumerate(names)}
        res, ks, es, ws = sp.resolutions, sp.kernels, sp.expands, sp.widths
        nr, nk, ne, nw = len(res), len(ks), len(es), len(ws)
        self._c_res = col["resolution"]
        self._c_wlast = col[f"width.s{sp.n_stages - 1}"]
        self._stem = np.array([self._entry(sp.stem_spec(r)) for r in res])
        self._head = np.array([[self._entry(sp.head_spec(r, w)) for w in ws] for r in res])
        # Per block: its columns, a dense table (depth, res, w_in, w_out, k, e) flattened at
        # an offset into one array; inactive (depth too small) entries are 0.
        tables, offsets = [], []
        c_depth, c_win, c_wout, c_k, c_e = [], [], [], [], []
        self._depth_vals = []
        off = 0
        for b in range(sp.n_blocks):
            s = sp.block_stage[b]
            st = sp.stages[s]
            first = b == st.first_block
            pos = b - st.first_block
            nd = len(st.depths)
            t = np.zeros((nd, nr, nw, nw, nk, ne))
            for di, d in enumerate(st.depths):
                if d <= pos:
                    continue
                for ri, r in enumerate(res):
                    for wi, w_in in enumerate(ws):
                        for wo, w_out in enumerate(ws):
                            # Non-first blocks take the stage's own width: w_in == w_out always.
                            w_eff = w_in if (first and s > 0) else w_out
                            for ki, k in enumerate(ks):
                                for ei, e in enumerate(es):
                                    spec = sp.block_spec(b, r, w_eff, w_out, k, e)
                                    t[di, ri, wi, wo, ki, ei] = self._entry(spec)
            tables.append(t.ravel())
            offsets.append(off)
            off += t.size
            c_depth.append(col[f"depth.s{s}"])
            c_win.append(col[f"width.s{s - 1}"] if (first and s > 0) else col[f"width.s{s}"])
            c_wout.append(col[f"width.s{s}"])
            c_k.append(col[f"kernel.b{b}"])
            c_e.append(col[f"expand.b{b}"])
        self._blocks = np.concatenate(tables)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._cols = {
            k: np.asarray(v, dtype=np.int64)
            for k, v in dict(depth=c_depth, win=c_win, wout=c_wout, k=c_k, e=c_e).items()
        }
        self._strides = (nr * nw * nw * nk * ne, nw * nw * nk * ne, nw * nk * ne, nk * ne, ne)
        # Active block count per stage and depth index.
        self._c_stage_depth = np.asarray([col[f"depth.s{i}"] for i in range(sp.n_stages)])
        self._depth_of = [np.asarray(st.depths, dtype=np.int64) for st in sp.stages]
        self._n_dims = len(names)

    def features(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        """Per-arch LUT features (ms, counts) for an (N, D) int64 index matrix."""
        e = np.asarray(encoded)
        if e.ndim != 2 or e.shape[1] != self._n_dims:
            raise ConfigError(
                f"encoded archs must be (N, {self._n_dims}) choice indices, got shape {e.shape}"
            )
        c = self._cols
        r = e[:, self._c_res]
        s0, s1, s2, s3, s4 = self._strides
        idx = (
            e[:, c["depth"]] * s0
            + r[:, None] * s1
            + e[:, c["win"]] * s2
            + e[:, c["wout"]] * s3
            + e[:, c["k"]] * s4
            + e[:, c["e"]]
            + self._offsets
        )
        blocks = self._blocks[idx].sum(axis=1)
        stem = self._stem[r]
        head = self._head[r, e[:, self._c_wlast]]
        n_active = np.zeros(len(e), dtype=np.float64)
        for s, cd in enumerate(self._c_stage_depth):
            n_active += self._depth_of[s][e[:, cd]]
        return {
            "sum": stem + blocks + head + self.overhead_ms,
            "stem": stem,
            "blocks": blocks,
            "head": head,
            "n_layers": n_active + 2.0,
        }

    def predict(self, encoded: np.ndarray) -> np.ndarray:
        """Calibrated latency (ms) per row of an (N, D) int64 index matrix."""
        # An affine fit on a few noisy subnets can extrapolate below zero for the smallest
        # archs; clamp to a small positive floor (the vectorized and scalar paths agree).
        return np.maximum(self.calibration.apply(self.features(encoded)), MIN_LATENCY_MS)

    def raw(self, encoded: np.ndarray) -> np.ndarray:
        """Uncalibrated LUT sum (ms): Σ(entry - overhead) + overhead."""
        return self.features(encoded)["sum"]

    def predict_arch(self, arch: Arch) -> float:
        """Scalar reference path: walks ``space.layer_specs(arch)`` (same result as predict)."""
        specs = self.space.layer_specs(arch)
        parts = {"stem": 0.0, "blocks": 0.0, "head": 0.0}
        for spec in specs:
            parts["blocks" if spec.kind == "block" else spec.kind] += self._entry(spec)
        feats = {
            k: np.asarray([v])
            for k, v in {
                **parts,
                "sum": sum(parts.values()) + self.overhead_ms,
                "n_layers": float(len(specs)),
            }.items()
        }
        return float(max(self.calibration.apply(feats)[0], MIN_LATENCY_MS))


def estimator_json(calibration: Calibration, target: str) -> dict:
    return {
        "schema_version": ESTIMATOR_SCHEMA_VERSION,
        "target": target,
        "lut": LUT_FILE,
        "calibration": calibration.to_json(),
    }


def load_estimator(latency_dir: str | Path, space: SearchSpace) -> LatencyEstimator:
    """Load ``latency/<target>/`` (lut.json + estimator.json) for ``space``."""
    d = Path(latency_dir)
    est_path, lut_path = d / ESTIMATOR_FILE, d / LUT_FILE
    for p in (est_path, lut_path):
        if not p.is_file():
            raise ConfigError(f"{p}: missing; build the table first (dvc repro latency_table)")
    est = read_json(est_path)
    if est.get("schema_version") != ESTIMATOR_SCHEMA_VERSION:
        raise ConfigError(
            f"{est_path}: schema_version {est.get('schema_version')!r} is not "
            f"{ESTIMATOR_SCHEMA_VERSION}; rebuild the table (dvc repro latency_table)"
        )
    lut_d = read_json(lut_path)
    lut = Lut.from_json(lut_d, str(lut_path))
    if "space" in lut.meta and SearchSpace.from_json(lut.meta["space"]) != space:
        raise ConfigError(
            f"{lut_path} was built for a different search space than models/supernet/space.json; "
            "rebuild it (dvc repro latency_table)"
        )
    return LatencyEstimator(space, lut, Calibration.from_json(est["calibration"]))
