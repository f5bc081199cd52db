"""Build one target's latency table end to end: LUT, calibration, held-out validation.

The ``latency_table`` stage runs it through :func:`onceflow.latency.stage.run_latency_table`.
It takes values (the space, a layer builder, a subnet extractor, a backend, the config) and
returns values; the stage writes them. Steps:

1. sample K calibration + M validation subnets (distinct; min and max arch go to calibration so
   the fit spans the whole range) and extract them;
2. time every unique layer signature of the space (+ the call overhead) and the K + M subnets
   end to end in ONE interleaved pass, so table and subnets see the same machine conditions;
3. fit the calibration on the K, report fidelity on the M.
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
from onceflow.latency.measured import MeasuredModel
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
    """The protocol for ``target``, with ``clock: auto`` resolved."""
    p = cfg.protocol
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
    protocol = protocol_from_config(cfg, target, seed)
    t_start = time.perf_counter()
    specs = space.unique_layer_specs()
    rng = np.random.default_rng(seed + 1)
    k, m = cfg.calibration_subnets, cfg.validation_subnets
    ends = list(dict.fromkeys([space.min_arch(), space.max_arch()]))[:k]
    calib = ends + sample_distinct(space, k - len(ends), rng, set(ends))
    valid = sample_distinct(space, m, rng, set(calib))
    # estimator measured / auto: more whole subnets to fit on (the validation stays held out)
    n_extra = max(0, target.measured_subnets - k) if target.estimator != "lut" else 0
    extra = sample_distinct(space, n_extra, rng, set(calib) | set(valid))
    archs = calib + valid + extra

    # One interleaved pass over LUT layers and whole subnets: whatever the machine does
    # meanwhile (other processes, clocks, caches) hits table and subnets alike.
    log.info(
        "timing %d layer signatures + call overhead and %d calibration + %d validation "
        "(+ %d training) subnets on %s (%s clock)",
        len(specs),
        k,
        m,
        n_extra,
        backend.name,
        protocol.clock,
    )
    b, c = target.batch_size, space.in_channels
    models = lut_models(specs, build_layer, b)
    n_lut = len(models)
    models += [(extract(a).eval(), (b, c, a.resolution, a.resolution)) for a in archs]
    wall, cpu = backend.sample_many(models, protocol)
    chosen = cpu if protocol.clock == "thread_cpu" else wall
    all_stats = [LatencyStats.from_samples(r) for r in chosen]
    build_seconds = time.perf_counter() - t_start
    lut = lut_from_stats(specs, all_stats[:n_lut])
    lut.meta = {
        "target": target_name,
        "target_config": target.model_dump(mode="json"),
        "environment": backend.environment(),
        "protocol": protocol.to_json(),
        "space": space.to_json(),
        "build_seconds": round(build_seconds, 3),
    }
    estimator = LatencyEstimator(space, lut)
    stats = all_stats[n_lut:]
    measured = np.array([s.median for s in stats])
    cvs = np.array([s.cv for s in stats])
    # Wall time over the protocol's clock (1.0 for wall): how much contention inflated wall time.
    wall_ratio = float(np.median(np.median(wall[n_lut:], axis=1) / measured))

    encoded = space.encode_batch(archs)
    feats = estimator.features(encoded)
    calibration = fit_calibration(
        {n: v[:k] for n, v in feats.items()}, measured[:k], cfg.calibration
    )
    predicted = calibration.apply(feats)
    raw = feats["sum"]
    v = slice(k, k + m)  # the held-out validation subnets
    lut_k = fidelity(predicted[v], measured[v])  # the LUT calibrated on the K subnets
    train = np.r_[0:k, k + m : len(archs)]
    model, selection = None, None
    if target.estimator != "lut":
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
            model = choice.measured
            predicted = choice.predictors(space)["measured"](feats, encoded)
        else:
            calibration = choice.calibration
            predicted = calibration.apply(feats)

    metrics = {
        "target": target_name,
        "backend": target.backend,
        "estimator": "measured" if model is not None else "lut",
        **fidelity(predicted[v], measured[v], cvs[v]),
        "lut_within_10pct": lut_k["within_10pct"],
        "lut_kendall_tau": lut_k["kendall_tau"],
        "mape_uncalibrated": fidelity(raw[v], measured[v])["mape"],
        "kendall_tau_uncalibrated": fidelity(raw[v], measured[v])["kendall_tau"],
        "calibration_model": calibration.model,
        "calibration_loo_mape": calibration.loo_mape,
        "n_calibration": k,
        "n_measured_train": int(len(train)) if target.estimator != "lut" else 0,
        **({"estimator_selection": selection} if selection else {}),
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
        "build_seconds": round(build_seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "measured_ms_range": [float(measured.min()), float(measured.max())],
        "clock": protocol.clock,
        "wall_over_clock": wall_ratio,
    }
    records = [
        {
            "arch": str(a),
            "role": "calibration" if i < k else "validation" if i < k + m else "training",
            "measured_ms": float(measured[i]),
            "predicted_ms": float(predicted[i]),
            "raw_lut_sum_ms": float(raw[i]),
            "cv": float(cvs[i]),
        }
        for i, a in enumerate(archs)
    ]
    log.info(
        "%s: within_10pct=%.3f kendall_tau=%.3f mape=%.4f (uncalibrated mape %.4f) noise_cv=%.4f",
        target_name,
        metrics["within_10pct"],
        metrics["kendall_tau"],
        metrics["mape"],
        metrics["mape_uncalibrated"],
        metrics["noise_cv"],
    )
    return TableResult(lut, calibration, records, metrics, model, selection)
