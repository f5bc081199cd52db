"""The latency estimator the search uses: calibrated LUT sums over encoded archs, vectorized.

For every block position b the LUT is unrolled once into a dense array over the choice indices
that determine b's layer (:class:`~onceflow.supernet.tables.BlockTables`; blocks skipped by
their stage's depth hold 0). Predicting a batch of encoded archs ``(N, D) int64`` is then one
small matrix product and one gather of shape (N, n_blocks), a few column gathers for stem and
head, row sums and the calibration's dot product: no Python loop over archs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onceflow import artifacts
from onceflow.errors import ConfigError
from onceflow.latency.calibration import Calibration
from onceflow.latency.lut import LUT_FILE, Lut
from onceflow.latency.measured import MeasuredEstimator, MeasuredModel
from onceflow.supernet.arch import Arch
from onceflow.supernet.space import SearchSpace
from onceflow.supernet.tables import BlockTables

ESTIMATOR_FILE = "estimator.json"
ESTIMATOR_SCHEMA_VERSION = 1


MIN_LATENCY_MS = 1e-4  # floor for calibrated predictions (ms)


class LatencyEstimator:
    """Predicts end-to-end latency (ms) of archs of ``space`` on the LUT's target."""

    kind = "lut"

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
        res, ws = sp.resolutions, sp.widths
        self._c_res = col["resolution"]
        self._c_wlast = col[f"width.s{sp.n_stages - 1}"]
        self._stem = np.array([self._entry(sp.stem_spec(r)) for r in res])
        self._head = np.array([[self._entry(sp.head_spec(r, w)) for w in ws] for r in res])
        self._tables = BlockTables(sp, ms=self._entry)
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
        r = e[:, self._c_res]
        blocks = self._tables.sums(e)["ms"]
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


def estimator_json(
    calibration: Calibration | None,
    target: str,
    measured: MeasuredModel | None = None,
    selection: dict | None = None,
) -> dict:
    """estimator.json: ``kind`` lut (LUT + calibration) or measured (a model fit on whole
    subnets; it reads the LUT too when one of its features is the LUT sum)."""
    return {
        "schema_version": ESTIMATOR_SCHEMA_VERSION,
        "target": target,
        "kind": "measured" if measured is not None else "lut",
        "lut": LUT_FILE if calibration is not None or (measured and measured.uses_lut) else None,
        "calibration": calibration.to_json() if calibration is not None else None,
        **({"measured": measured.to_json()} if measured is not None else {}),
        **({"selection": selection} if selection else {}),
    }


def load_estimator(
    latency_dir: str | Path, space: SearchSpace
) -> LatencyEstimator | MeasuredEstimator:
    """Load ``latency/<target>/`` (estimator.json, + lut.json when the estimator uses it) for
    ``space``: either estimator has ``predict(encoded)`` and ``predict_arch(arch)`` in ms."""
    d = Path(latency_dir)
    est_path, lut_path = d / ESTIMATOR_FILE, d / LUT_FILE
    if not est_path.is_file():
        raise ConfigError(f"{est_path}: missing; build the table first (dvc repro latency_table)")
    est = artifacts.latency_file(est_path)  # checked: one line naming the file and its stage
    if est.get("schema_version") != ESTIMATOR_SCHEMA_VERSION:
        raise ConfigError(
            f"{est_path}: schema_version {est.get('schema_version')!r} is not "
            f"{ESTIMATOR_SCHEMA_VERSION}; rebuild the table (dvc repro latency_table)"
        )
    if est.get("kind", "lut") == "measured":
        model = MeasuredModel.from_json(est.get("measured") or {}, str(est_path))
        lut_est = _load_lut(lut_path, space, est, est_path) if model.uses_lut else None
        return MeasuredEstimator(space, model, lut_est.raw if lut_est else None)
    return _load_lut(lut_path, space, est, est_path)


def _load_lut(lut_path: Path, space: SearchSpace, est: dict, est_path: Path) -> LatencyEstimator:
    if not lut_path.is_file():
        raise ConfigError(f"{lut_path}: missing; build the table first (dvc repro latency_table)")
    lut_d = artifacts.latency_file(lut_path)
    path = lut_path
    try:
        lut = Lut.from_json(lut_d, str(lut_path))
        same = "space" not in lut.meta or SearchSpace.from_json(lut.meta["space"]) == space
        path = est_path
        cal = est.get("calibration")
        calibration = Calibration.from_json(cal) if cal else None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise artifacts.field_error(path, err, artifacts.latency_stage(path)) from None
    if not same:
        raise ConfigError(
            f"{lut_path} was built for a different search space than models/supernet/space.json; "
            "rebuild it (dvc repro latency_table)"
        )
    try:
        return LatencyEstimator(space, lut, calibration)
    except ConfigError as err:  # an entry the space needs is not in the table: name the file
        raise ConfigError(f"{lut_path}: {err}") from None
