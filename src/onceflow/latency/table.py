"""Build one target's latency table end to end: LUT, calibration, held-out validation.

The ``latency_table`` stage runs it through :func:`onceflow.latency.stage.run`.
It takes values (the space, a layer builder, a subnet extractor, a backend, the config) and
returns values; the stage writes them. Steps:

1. sample K calibration + M validation subnets (distinct; min and max arch go to calibration so
   the fit spans the whole range) and extract them;
2. time every unique layer signature of the space (+ the call overhead) and the K + M subnets
   end to end in ONE interleaved pass, so table and subnets see the same machine conditions;
3. fit the calibration on the K, report fidelity on the M.

``estimator: measured`` skips the per-layer table (:func:`build_measured_table`): only whole
subnets are timed, and a model fit on them is the estimator; it costs a tenth of a LUT.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from onceflow.config import LatencyConfig, LatencyTarget
from onceflow.errors import ConfigError
from onceflow.latency.backends.base import Backend
from onceflow.latency.calibration import Calibration, fit_calibration
from onceflow.latency.estimator import LatencyEstimator
from onceflow.latency.fidelity import fidelity
from onceflow.latency.lut import Lut, lut_from_stats, lut_models
from onceflow.latency.measured import MeasuredEstimator, MeasuredModel, fit_measured
from onceflow.latency.protocol import LatencyStats, MeasureProtocol
from onceflow.latency.selection import choose_estimator
from onceflow.supernet.arch import Arch
from onceflow.supernet.space import SearchSpace
from onceflow.supernet.specs import LayerSpec

log = logging.getLogger(__name__)


@dataclass
class TableResult:
    lut: Lut | None  # None for an imported target (no per-layer table)
    calibration: Calibration | None
    records: list[dict]  # one per measured subnet: arch, role, measured/predicted/raw ms, cv
    metrics: dict
    measured: MeasuredModel | None = None  # set when the chosen estimator is `measured`
    selection: dict | None = None  # estimator auto: what was compared and why one won


def protocol_from_config(cfg: LatencyConfig, target: LatencyTarget, seed: int) -> MeasureProtocol:
    """The protocol for ``target``: ``latency.protocol`` with the target's own
    ``protocol_repeats`` / ``protocol_sessions`` where set, and ``clock: auto`` resolved."""
    own = {"repeats": target.protocol_repeats, "sessions": target.protocol_sessions}
    p = cfg.protocol.model_copy(update={k: v for k, v in own.items() if v is not None})
    clock = p.clock
    if clock == "auto":
        clock = "thread_cpu" if target.single_threaded_cpu else "wall"
    return MeasureProtocol.from_config(p, seed=seed, clock=clock)


def sample_distinct(
    space: SearchSpace, n: int, rng: np.random.Generator, taken: set[Arch] | None = None
) -> list[Arch]:
    """``n`` distinct archs not in ``taken`` (bounded attempts; small spaces raise ConfigError)."""
    taken = set() if taken is None else set(taken)
    out: list[Arch] = []
    attempts = 50 * n + 100 if n <= space.size() - len(taken) else 0
    for _ in range(attempts):
        if len(out) == n:
            break
        a = space.sample(rng)
        if a not in taken:
            taken.add(a)
            out.append(a)
    if len(out) < n:
        raise ConfigError(
            f"could not draw {n} distinct new subnets from a space of {space.size()} "
            f"({len(taken) - len(out)} already taken); lower latency.calibration_subnets / "
            "latency.validation_subnets"
        )
    return out


@dataclass(frozen=True)
class Subnets:
    """The whole subnets one table times: K calibration, M validation, then the extra training
    subnets of the measured estimator (``archs`` in that order)."""

    archs: list[Arch]
    k: int
    m: int

    @property
    def validation(self) -> slice:
        return slice(self.k, self.k + self.m)

    @property
    def train(self) -> np.ndarray:
        """Every measured subnet but the held-out validation ones (calibration + training)."""
        return np.r_[0 : self.k, self.k + self.m : len(self.archs)]

    def role(self, i: int) -> str:
        return "calibration" if i < self.k else "validation" if i < self.k + self.m else "training"


def draw_subnets(
    space: SearchSpace, cfg: LatencyConfig, target: LatencyTarget, seed: int
) -> Subnets:
    """Step 1: K calibration (min and max arch first, so the fit spans the whole range), M
    validation and, for estimator measured / auto, training subnets; all distinct."""
    rng = np.random.default_rng(seed + 1)
    k, m = cfg.calibration_subnets, cfg.validation_subnets
    ends = list(dict.fromkeys([space.min_arch(), space.max_arch()]))[:k]
    calib = ends + sample_distinct(space, k - len(ends), rng, set(ends))
    valid = sample_distinct(space, m, rng, set(calib))
    # estimator measured / auto: more whole subnets to fit on (the validation stays held out)
    n_extra = max(0, target.measured_subnets - k) if target.estimator != "lut" else 0
    extra = sample_distinct(space, n_extra, rng, set(calib) | set(valid))
    return Subnets(calib + valid + extra, k, m)


@dataclass(frozen=True)
class Timings:
    """Step 2's result: one LatencyStats per timed model (LUT layers first, then subnets) on
    the protocol's clock, and the raw wall-clock samples (n_models, repeats)."""

    stats: list[LatencyStats]
    wall: np.ndarray
    seconds: float


def time_in_one_pass(
    backend: Backend,
    models: list[tuple[nn.Module, tuple[int, ...]]],
    protocol: MeasureProtocol,
    t_start: float,
) -> Timings:
    """Step 2: time every model in ONE interleaved pass: whatever the machine does meanwhile
    (other processes, clocks, caches) hits table and subnets alike."""
    wall, cpu = backend.sample_many(models, protocol)
    chosen = cpu if protocol.clock == "thread_cpu" else wall
    stats = [LatencyStats.from_samples(r) for r in chosen]
    return Timings(stats, wall, time.perf_counter() - t_start)


def lut_with_meta(
    specs: list[LayerSpec],
    timings: Timings,
    target_name: str,
    target: LatencyTarget,
    backend: Backend,
    protocol: MeasureProtocol,
    space: SearchSpace,
) -> Lut:
    """Step 3: the per-layer table from the first ``len(specs) + 1`` timings, with its record."""
    lut = lut_from_stats(specs, timings.stats[: len(specs) + 1])
    lut.meta = {
        "target": target_name,
        "target_config": target.model_dump(mode="json"),
        "environment": backend.environment(),
        "protocol": protocol.to_json(),
        "space": space.to_json(),
        "build_seconds": round(timings.seconds, 3),
    }
    return lut


@dataclass
class Fit:
    """Step 4's result: the calibrated LUT, and the measured model where it was chosen."""

    calibration: Calibration
    predicted: np.ndarray
    lut_k: dict[str, float]  # the LUT calibrated on the K subnets, on the validation subnets
    model: MeasuredModel | None
    selection: dict | None


def fit_estimator(
    space: SearchSpace,
    subnets: Subnets,
    encoded: np.ndarray,
    feats: dict[str, np.ndarray],
    measured: np.ndarray,
    cfg: LatencyConfig,
    target: LatencyTarget,
    seed: int,
) -> Fit:
    """Step 4: calibrate the LUT on the K subnets; for estimator measured / auto also fit the
    measured model on every non-validation subnet and choose (validation only reports)."""
    k, v = subnets.k, subnets.validation
    calibration = fit_calibration(
        {n: f[:k] for n, f in feats.items()}, measured[:k], cfg.calibration
    )
    predicted = calibration.apply(feats)
    lut_k = fidelity(predicted[v], measured[v])
    if target.estimator == "lut":
        return Fit(calibration, predicted, lut_k, None, None)
    train = subnets.train
    choice = choose_estimator(
        space,
        encoded[train],
        measured[train],
        feats={n: f[train] for n, f in feats.items()},
        mode=target.estimator,
        calibration_model=cfg.calibration,
        seed=seed,
    )
    selection = choice.selection
    selection["validation"] = {
        name: fidelity(est_pred(feats, encoded)[v], measured[v])
        for name, est_pred in choice.predictors(space).items()
    }
    if choice.kind == "measured":
        predicted = choice.predictors(space)["measured"](feats, encoded)
        return Fit(calibration, predicted, lut_k, choice.measured, selection)
    return Fit(choice.calibration, choice.calibration.apply(feats), lut_k, None, selection)


def table_metrics(
    target_name: str,
    target: LatencyTarget,
    subnets: Subnets,
    fit: Fit,
    lut: Lut,
    raw: np.ndarray,
    stats: list[LatencyStats],
    timings: Timings,
    backend: Backend,
    protocol: MeasureProtocol,
    t_start: float,
) -> dict:
    """Step 5: the table's record (fidelity on the held-out subnets, noise, timings)."""
    v, k = subnets.validation, subnets.k
    n_lut = len(timings.stats) - len(stats)
    cal = fit.calibration
    uncalibrated = fidelity(raw[v], np.array([s.median for s in stats])[v])
    timing = _subnet_timing_record(
        stats, v, fit.predicted, timings.wall[n_lut:], timings, protocol, t_start
    )
    return {
        "target": target_name,
        "backend": target.backend,
        "estimator": "measured" if fit.model is not None else "lut",
        **timing.pop("fidelity"),
        "lut_within_10pct": fit.lut_k["within_10pct"],
        "lut_kendall_tau": fit.lut_k["kendall_tau"],
        "mape_uncalibrated": uncalibrated["mape"],
        "kendall_tau_uncalibrated": uncalibrated["kendall_tau"],
        "calibration_model": cal.model,
        "calibration_loo_mape": cal.loo_mape,
        "n_calibration": k,
        "n_measured_train": int(len(subnets.train)) if target.estimator != "lut" else 0,
        **({"estimator_selection": fit.selection} if fit.selection else {}),
        "lut_entries": len(lut.entries),
        "lut_noise_cv": float(np.median([s.cv for s in lut.entries.values()])),
        # the machine's mood while timing: models whose samples were bimodal or drifted were
        # timed again; a bimodal one's latency is its faster mode's median
        "noise": {
            **backend.noise,
            "bimodal_lut_entries": sum(s.bimodal for s in lut.entries.values()),
            "bimodal_subnets": sum(s.bimodal for s in stats),
        },
        "call_overhead_ms": lut.overhead.median,
        **timing,
    }


def _subnet_timing_record(
    stats: list[LatencyStats],
    validation: slice,
    predicted: np.ndarray,
    wall: np.ndarray,
    timings: Timings,
    protocol: MeasureProtocol,
    t_start: float,
) -> dict:
    """What every table records about its measured subnets: ``fidelity`` of ``predicted`` on
    the held-out ones (popped by the caller), build and total seconds, the measured range, the
    clock, and wall time over the clock (1.0 for wall: how much contention inflated wall
    time; ``wall`` holds the subnets' wall samples)."""
    measured = np.array([s.median for s in stats])
    cvs = np.array([s.cv for s in stats])
    v = validation
    return {
        "fidelity": fidelity(predicted[v], measured[v], cvs[v]),
        "build_seconds": round(timings.seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "measured_ms_range": [float(measured.min()), float(measured.max())],
        "clock": protocol.clock,
        "wall_over_clock": float(np.median(np.median(wall, axis=1) / measured)),
    }


def table_records(
    subnets: Subnets, stats: list[LatencyStats], predicted: np.ndarray, raw: np.ndarray
) -> list[dict]:
    """One record per measured subnet: arch, role, measured / predicted / raw LUT ms, cv."""
    return [
        {
            "arch": str(a),
            "role": subnets.role(i),
            "measured_ms": float(stats[i].median),
            "predicted_ms": float(predicted[i]),
            "raw_lut_sum_ms": float(raw[i]),
            "cv": float(stats[i].cv),
        }
        for i, a in enumerate(subnets.archs)
    ]


def build_latency_table(
    space: SearchSpace,
    build_layer: Callable[[LayerSpec], nn.Module],
    extract: Callable[[Arch], nn.Module],
    backend: Backend,
    cfg: LatencyConfig,
    target_name: str,
    seed: int = 0,
) -> TableResult:
    """Measure, calibrate and validate a latency table for ``target_name`` (see module doc)."""
    target: LatencyTarget = cfg.targets[target_name]
    backend.require(target_name)
    if target.estimator == "measured":
        return build_measured_table(space, extract, backend, cfg, target_name, seed)
    protocol = protocol_from_config(cfg, target, seed)
    t_start = time.perf_counter()
    specs = space.unique_layer_specs()
    subnets = draw_subnets(space, cfg, target, seed)
    log.info(
        "timing %d layer signatures + call overhead and %d calibration + %d validation "
        "(+ %d training) subnets on %s (%s clock)",
        len(specs),
        subnets.k,
        subnets.m,
        len(subnets.archs) - subnets.k - subnets.m,
        backend.name,
        protocol.clock,
    )
    b, c = target.batch_size, space.in_channels
    models = lut_models(specs, build_layer, b)
    n_lut = len(models)
    models += [(extract(a).eval(), (b, c, a.resolution, a.resolution)) for a in subnets.archs]
    timings = time_in_one_pass(backend, models, protocol, t_start)
    lut = lut_with_meta(specs, timings, target_name, target, backend, protocol, space)
    stats = timings.stats[n_lut:]
    measured = np.array([s.median for s in stats])
    encoded = space.encode_batch(subnets.archs)
    feats = LatencyEstimator(space, lut).features(encoded)
    fit = fit_estimator(space, subnets, encoded, feats, measured, cfg, target, seed)
    raw = feats["sum"]
    metrics = table_metrics(
        target_name, target, subnets, fit, lut, raw, stats, timings, backend, protocol, t_start
    )
    log.info(
        "%s: within_10pct=%.3f kendall_tau=%.3f mape=%.4f (uncalibrated mape %.4f) noise_cv=%.4f",
        target_name,
        metrics["within_10pct"],
        metrics["kendall_tau"],
        metrics["mape"],
        metrics["mape_uncalibrated"],
        metrics["noise_cv"],
    )
    records = table_records(subnets, stats, fit.predicted, raw)
    return TableResult(lut, fit.calibration, records, metrics, fit.model, fit.selection)


# ------------------------------------------------------------ estimator: measured (no LUT)
def draw_measured_subnets(
    space: SearchSpace, cfg: LatencyConfig, target: LatencyTarget, seed: int
) -> Subnets:
    """M validation subnets, then ``measured_subnets`` training ones (min and max arch
    first, so the fit spans the whole range); all distinct. No calibration subnets (k = 0)."""
    rng = np.random.default_rng(seed + 1)
    n = target.measured_subnets
    ends = list(dict.fromkeys([space.min_arch(), space.max_arch()]))[:n]
    valid = sample_distinct(space, cfg.validation_subnets, rng, set(ends))
    train = ends + sample_distinct(space, n - len(ends), rng, set(ends) | set(valid))
    return Subnets(valid + train, 0, cfg.validation_subnets)


def measured_metrics(
    target_name: str,
    target: LatencyTarget,
    subnets: Subnets,
    model: MeasuredModel,
    predicted: np.ndarray,
    stats: list[LatencyStats],
    timings: Timings,
    backend: Backend,
    protocol: MeasureProtocol,
    t_start: float,
) -> dict:
    """The record of a measured-only table: fidelity on the held-out subnets, the chosen
    model and its cross-validated rivals, noise, timings; and why there is no LUT."""
    timing = _subnet_timing_record(
        stats, subnets.validation, predicted, timings.wall, timings, protocol, t_start
    )
    return {
        "target": target_name,
        "backend": target.backend,
        "estimator": "measured",
        "lut": (
            "none: estimator measured fits whole subnets only (no per-layer table is timed); "
            "use estimator lut or auto for one"
        ),
        **timing.pop("fidelity"),
        "n_measured_train": int(len(subnets.train)),
        "measured_model": model.cv["chosen"],
        "measured_cv": model.cv["candidates"][model.cv["chosen"]],
        "noise": {**backend.noise, "bimodal_subnets": sum(s.bimodal for s in stats)},
        **timing,
    }


def build_measured_table(
    space: SearchSpace,
    extract: Callable[[Arch], nn.Module],
    backend: Backend,
    cfg: LatencyConfig,
    target_name: str,
    seed: int = 0,
) -> TableResult:
    """``estimator: measured`` on an attached target: time ``measured_subnets`` training and
    M validation subnets end to end in one interleaved pass (no per-layer table), fit the
    measured-subnet model on the training ones (cross-validated selection) and report its
    fidelity on the held-out M."""
    target = cfg.targets[target_name]
    protocol = protocol_from_config(cfg, target, seed)
    t_start = time.perf_counter()
    subnets = draw_measured_subnets(space, cfg, target, seed)
    log.info(
        "timing %d training + %d validation subnets on %s (%s clock), no per-layer table",
        len(subnets.train),
        subnets.m,
        backend.name,
        protocol.clock,
    )
    b, c = target.batch_size, space.in_channels
    models = [(extract(a).eval(), (b, c, a.resolution, a.resolution)) for a in subnets.archs]
    timings = time_in_one_pass(backend, models, protocol, t_start)
    measured = np.array([s.median for s in timings.stats])
    encoded = space.encode_batch(subnets.archs)
    train = subnets.train
    model = fit_measured(space, encoded[train], measured[train], None, seed=seed)
    predicted = MeasuredEstimator(space, model).predict(encoded)
    metrics = measured_metrics(
        target_name, target, subnets, model, predicted, timings.stats, timings, backend,
        protocol, t_start,
    )  # fmt: skip
    log.info(
        "%s (measured, %s): within_10pct=%.3f kendall_tau=%.3f mape=%.4f noise_cv=%.4f",
        target_name,
        model.cv["chosen"],
        metrics["within_10pct"],
        metrics["kendall_tau"],
        metrics["mape"],
        metrics["noise_cv"],
    )
    records = [
        {
            "arch": str(a),
            "role": subnets.role(i),
            "measured_ms": float(measured[i]),
            "predicted_ms": float(predicted[i]),
            "cv": float(timings.stats[i].cv),
        }
        for i, a in enumerate(subnets.archs)
    ]
    selection = {"mode": "measured", "chosen": "measured", "reason": metrics["lut"]}
    return TableResult(None, None, records, metrics, model, selection)
