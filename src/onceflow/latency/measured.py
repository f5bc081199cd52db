"""A latency model fit on whole measured subnets: the second estimator kind next to the LUT.

A per-layer table sums isolated layers; runtimes that fuse layers (TensorRT, NPU compilers) or
batch many images make whole networks cost something else. This model learns end-to-end
latency directly from N measured subnets:

* features of the encoded arch (:class:`ArchFeatures`), vectorized like the LUT estimator:
  per stage, the active blocks, the MACs of the 1x1 convs, of the depthwise convs and of the
  squeeze-excite, and the activation volume the block touches; stem and head MACs; the
  resolution one-hot. Optionally (``+lut`` sets) the raw LUT sum of a measured target, so a new
  device transfers from an attached one;
* candidates: ridge regression over a few feature sets and penalties, fit on *relative* squared
  error (rows weighted by 1/measured^2, as the ±10% criterion is relative);
* selection by k-fold cross-validated MAPE on the N subnets (:func:`fit_measured`), every
  candidate's out-of-fold figures kept for the record.

The fitted model is a few arrays (standardization, coefficients), stored as JSON in
``estimator.json``; :class:`MeasuredEstimator` predicts an (N, D) batch with one gather and one
matrix product, like :class:`~onceflow.latency.estimator.LatencyEstimator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onceflow.errors import ConfigError
from onceflow.latency.fidelity import fidelity
from onceflow.supernet.arch import Arch
from onceflow.supernet.space import SearchSpace
from onceflow.supernet.specs import LayerSpec
from onceflow.supernet.tables import BlockTables

MIN_LATENCY_MS = 1e-4
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
K_FOLDS = 5


def _pw_macs(s: LayerSpec) -> float:
    return float(s.in_res**2 * s.in_ch * s.mid_ch + s.out_res**2 * s.mid_ch * s.out_ch)


def _dw_macs(s: LayerSpec) -> float:
    return float(s.out_res**2 * s.kernel**2 * s.mid_ch)


def _se_macs(s: LayerSpec) -> float:
    return float(2 * s.mid_ch * s.se_ch)


def _volume(s: LayerSpec) -> float:
    """Activation elements a block reads and writes (memory traffic, not arithmetic)."""
    return float(s.in_res**2 * (s.in_ch + s.mid_ch) + s.out_res**2 * (s.mid_ch + s.out_ch))


def _one(s: LayerSpec) -> float:
    return 1.0


BLOCK_COSTS: dict[str, Callable[[LayerSpec], float]] = {
    "blocks": _one,
    "pw_mmacs": lambda s: _pw_macs(s) / 1e6,
    "dw_mmacs": lambda s: _dw_macs(s) / 1e6,
    "se_mmacs": lambda s: _se_macs(s) / 1e6,
    "volume_m": lambda s: _volume(s) / 1e6,
}

# Feature sets the selection tries; "+lut" ones only when a LUT sum is given.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "costs": ("totals", "resolution"),
    "stage_costs": ("per_stage", "resolution"),
    "costs+lut": ("totals", "resolution", "lut"),
    "stage_costs+lut": ("per_stage", "resolution", "lut"),
    "lut": ("lut",),
}


class ArchFeatures:
    """Latency features of ``(N, D)`` encoded archs of ``space`` (see the module docstring)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        names = [d.name for d in space.dimensions()]
        col = {n: i for i, n in enumerate(names)}
        self._n_dims = len(names)
        self._c_res, self._c_wlast = col["resolution"], col[f"width.s{space.n_stages - 1}"]
        self._tables = BlockTables(space, **BLOCK_COSTS)
        self._stage_of = np.asarray(space.block_stage)
        res, ws = space.resolutions, space.widths
        self._stem = np.array([_pw_macs(space.stem_spec(r)) / 1e6 for r in res])
        self._head = np.array([[_pw_macs(space.head_spec(r, w)) / 1e6 for w in ws] for r in res])

    def blocks(self, encoded: np.ndarray) -> dict[str, np.ndarray]:
        """Per block position: cost name -> (N, n_blocks) (0 where the block is skipped)."""
        e = np.asarray(encoded, dtype=np.int64)
        if e.ndim != 2 or e.shape[1] != self._n_dims:
            raise ConfigError(
                f"encoded archs must be (N, {self._n_dims}) choice indices, got shape {e.shape}"
            )
        idx = self._tables.index(e)
        return {k: np.take(v, idx) for k, v in self._tables.values.items()}

    def matrix(
        self, encoded: np.ndarray, feature_set: str, lut_ms: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, F) float64 features of ``feature_set`` (a :data:`FEATURE_SETS` key)."""
        parts = FEATURE_SETS[feature_set]
        e = np.asarray(encoded, dtype=np.int64)
        cols: list[np.ndarray] = []
        if "totals" in parts or "per_stage" in parts:
            per_block = self.blocks(e)
            r = e[:, self._c_res]
            stem_head = np.stack([self._stem[r], self._head[r, e[:, self._c_wlast]]], axis=1)
            cols.append(stem_head)
            for v in per_block.values():
                if "totals" in parts:
                    cols.append(v.sum(axis=1, keepdims=True))
                else:
                    n_st = self.space.n_stages
                    stage = np.zeros((len(e), n_st))
                    for s in range(n_st):
                        stage[:, s] = v[:, self._stage_of == s].sum(axis=1)
                    cols.append(stage)
        if "resolution" in parts:
            cols.append(np.eye(len(self.space.resolutions))[e[:, self._c_res]])
        if "lut" in parts:
            if lut_ms is None:
                raise ValueError(f"feature set {feature_set!r} needs the LUT sums")
            cols.append(np.asarray(lut_ms, dtype=np.float64)[:, None])
        return np.concatenate(cols, axis=1)


@dataclass(frozen=True)
class MeasuredModel:
    """ms = ((features - mean) / scale) @ coef + intercept, for ``feature_set``."""

    feature_set: str
    alpha: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    n_train: int
    cv: Mapping[str, Any] = field(default_factory=dict)  # out-of-fold figures per candidate

    @property
    def uses_lut(self) -> bool:
        return "lut" in FEATURE_SETS[self.feature_set]

    def apply(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        return z @ np.asarray(self.coef) + self.intercept

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_set": self.feature_set,
            "alpha": self.alpha,
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "n_train": self.n_train,
            "cv": dict(self.cv),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], source: str = "estimator.json") -> MeasuredModel:
        try:
            m = cls(
                feature_set=str(d["feature_set"]),
                alpha=float(d["alpha"]),
                mean=tuple(float(v) for v in d["mean"]),
                scale=tuple(float(v) for v in d["scale"]),
                coef=tuple(float(v) for v in d["coef"]),
                intercept=float(d["intercept"]),
                n_train=int(d["n_train"]),
                cv=d.get("cv") or {},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"{source}: the measured estimator is malformed ({err!r}); rebuild the table "
                "(dvc repro latency_table)"
            ) from None
        if m.feature_set not in FEATURE_SETS or not len(m.mean) == len(m.scale) == len(m.coef):
            raise ConfigError(f"{source}: unknown or inconsistent measured estimator; rebuild it")
        return m


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Weighted ridge on standardized features (rows weighted by 1/y^2: relative error).
    Returns (mean, scale, coef, intercept)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    w = 1.0 / y**2
    za = np.concatenate([z, np.ones((len(z), 1))], axis=1)
    reg = np.full(za.shape[1], alpha * float(w.sum()) / len(w))
    reg[-1] = 0.0  # the intercept is not penalized
    a = za.T @ (za * w[:, None]) + np.diag(reg)
    sol = np.linalg.solve(a, za.T @ (w * y))
    return mean, scale, sol[:-1], np.asarray(sol[-1])


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), min(k, n))


def oof_predictions(
    x: np.ndarray, y: np.ndarray, alpha: float, folds: list[np.ndarray]
) -> np.ndarray:
    """Out-of-fold predictions of the ridge model (each subnet predicted by a fit without it)."""
    out = np.empty_like(y)
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        mean, scale, coef, b = fit_ridge(x[train], y[train], alpha)
        out[test] = ((x[test] - mean) / scale) @ coef + b
    return out


def fit_measured(
    space: SearchSpace,
    encoded: np.ndarray,
    measured_ms: np.ndarray,
    lut_ms: np.ndarray | None = None,
    *,
    seed: int = 0,
    k_folds: int = K_FOLDS,
    feature_sets: tuple[str, ...] | None = None,
) -> MeasuredModel:
    """The candidate (feature set x ridge penalty) with the lowest k-fold CV MAPE, refit on all
    ``measured_ms``. ``lut_ms`` (raw LUT sums of the same archs) enables the ``+lut`` sets."""
    y = np.asarray(measured_ms, dtype=np.float64)
    if y.ndim != 1 or len(y) < 2 * k_folds or not np.all(np.isfinite(y)) or (y <= 0).any():
        raise ConfigError(
            f"the measured estimator needs >= {2 * k_folds} finite positive latencies, got {len(y)}"
        )
    feats = ArchFeatures(space)
    sets = feature_sets or tuple(
        k for k, v in FEATURE_SETS.items() if lut_ms is not None or "lut" not in v
    )
    folds = _folds(len(y), k_folds, seed)
    cv: dict[str, Any] = {}
    best: tuple[float, str, float] | None = None
    for fs in sets:
        x = feats.matrix(encoded, fs, lut_ms)
        for alpha in ALPHAS:
            pred = np.maximum(oof_predictions(x, y, alpha, folds), MIN_LATENCY_MS)
            f = fidelity(pred, y)
            key = f"{fs}@{alpha:g}"
            cv[key] = {k: round(float(f[k]), 4) for k in ("mape", "within_10pct", "kendall_tau")}
            if best is None or f["mape"] < best[0]:
                best = (float(f["mape"]), fs, alpha)
    assert best is not None
    _, fs, alpha = best
    mean, scale, coef, b = fit_ridge(feats.matrix(encoded, fs, lut_ms), y, alpha)
    return MeasuredModel(
        feature_set=fs,
        alpha=alpha,
        mean=tuple(map(float, mean)),
        scale=tuple(map(float, scale)),
        coef=tuple(map(float, coef)),
        intercept=float(b),
        n_train=len(y),
        cv={"k_folds": len(folds), "candidates": cv, "chosen": f"{fs}@{alpha:g}"},
    )


class MeasuredEstimator:
    """Predicts end-to-end latency (ms) of archs of ``space`` from a :class:`MeasuredModel`;
    ``lut_sum`` gives raw LUT sums for models that use them."""

    kind = "measured"

    def __init__(
        self,
        space: SearchSpace,
        model: MeasuredModel,
        lut_sum: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if model.uses_lut and lut_sum is None:
            raise ConfigError(
                f"the measured estimator uses a LUT feature ({model.feature_set}) but no LUT "
                "was given; rebuild the table (dvc repro latency_table)"
            )
        self.space, self.model, self._lut_sum = space, model, lut_sum
        self._features = ArchFeatures(space)

    def predict(self, encoded: np.ndarray) -> np.ndarray:
        """Latency (ms) per row of an (N, D) int64 index matrix."""
        e = np.asarray(encoded, dtype=np.int64)
        lut = self._lut_sum(e) if self.model.uses_lut and self._lut_sum else None
        x = self._features.matrix(e, self.model.feature_set, lut)
        return np.maximum(self.model.apply(x), MIN_LATENCY_MS)

    def predict_arch(self, arch: Arch) -> float:
        return float(self.predict(self.space.encode_batch([arch]))[0])
