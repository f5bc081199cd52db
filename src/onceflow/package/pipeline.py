"""Package every arch the search selected for one target (:func:`package_target`; the stage
around it is :mod:`onceflow.package.stage`).

Per selected arch: extract the static subnet from the supernet, re-estimate BatchNorm
statistics on train images (the supernet's shared statistics are wrong for any one subnet),
optionally fine-tune it with distillation from the largest subnet
(:func:`onceflow.train.finetune.finetune`), then ``build_package``.
Latency is measured with the latency package's backend for the target, under the same protocol
as its lookup tables, on the exact ONNX bytes that ship (ONNX Runtime targets; for int8 targets
the statically quantized model, quantized as the table's models were).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from onceflow import __version__, artifacts
from onceflow.accuracy import recalibrated
from onceflow.config import LatencyTarget, PackageConfig, Params
from onceflow.data.prepared import PreparedData
from onceflow.errors import ConfigError, SearchError
from onceflow.package.build import (
    Candidate,
    EngineFn,
    MeasureFn,
    PackageResult,
    QuantizeFn,
    TargetInfo,
    build_package,
)
from onceflow.package.parity import Int8ParityError
from onceflow.progress import track
from onceflow.supernet import Arch, Supernet
from onceflow.train.finetune import finetune

log = logging.getLogger(__name__)

MEASURE_ROUNDS = 3  # a package is timed this many times; the fastest median counts


def parse_selection(doc: Any, source: str, space: Any) -> list[Candidate]:
    """Candidates from a ``selected.json`` document ({"selected": [...]} or a bare list).

    Each entry needs an arch (``arch_json`` dict, or ``arch`` as dict or compact string); the
    same arch selected for several budgets is packaged once and records every budget.
    """
    entries = doc.get("selected") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise SearchError(f"{source}: no selected archs (expected a non-empty 'selected' list)")
    by_arch: dict[Arch, dict[str, Any]] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise SearchError(f"{source}: selected[{i}] is not an object")
        raw = e.get("arch_json", e.get("arch"))
        try:
            arch = Arch.parse(raw) if isinstance(raw, str) else Arch.from_json(raw or {})
        except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise artifacts.field_error(source, err, f"search@{Path(source).parent.name}") from None
        try:
            space.validate(arch)
        except ConfigError as err:
            raise ConfigError(f"{source}: selected[{i}]: {err}") from None
        arch = space.canonical(arch)
        slot = by_arch.setdefault(arch, {"budgets": [], "entry": e})
        if e.get("budget_ms") is not None:
            slot["budgets"].append(float(e["budget_ms"]))
    out = []
    for arch, slot in by_arch.items():
        e = slot["entry"]
        out.append(
            Candidate(
                arch_json=arch.to_json(),
                arch_str=str(arch),
                resolution=arch.resolution,
                budgets_ms=tuple(sorted(slot["budgets"])),
                predicted_accuracy=_opt(e.get("predicted_accuracy")),
                predicted_latency_ms=_opt(e.get("predicted_latency_ms")),
            )
        )
    return out


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def calibrated_subnet(
    supernet: Supernet, arch: Arch, data: PreparedData, cfg: PackageConfig, seed: int
) -> nn.Module:
    """The static subnet with BN statistics re-estimated on a fixed train subset."""
    return _recalibrated(supernet.extract(arch), arch, data, cfg, seed)


def _recalibrated(
    sub: nn.Module, arch: Arch, data: PreparedData, cfg: PackageConfig, seed: int
) -> nn.Module:
    return recalibrated(
        sub, arch.resolution, data, n_calib=cfg.bn_calibration_images, batch_size=cfg.batch_size,
        seed=seed,
    )  # fmt: skip


def target_info(name: str, target: LatencyTarget) -> TargetInfo:
    return TargetInfo(name=name, config=target)


def not_timed(onnx_bytes: bytes, model: nn.Module, shape: tuple[int, ...]) -> Mapping[str, Any]:
    """An imported target's package: its device is not attached, so nothing is timed here; the
    latency shipped is the estimator's (fit on the device's own timings of sample subnets)."""
    return {"timed": False}


def backend_fns(
    target: LatencyTarget, params: Params, name: str, data: PreparedData | None = None
) -> tuple[MeasureFn, EngineFn | None, str, QuantizeFn | None]:
    """Latency measurement, TensorRT engine building and ONNX Runtime int8 quantization through
    the latency package's backend. int8 targets calibrate on ``data``'s train images, exactly
    as their latency table did (:mod:`onceflow.latency.calibration_data`).

    Raises BackendUnavailable (with the reason) when the target cannot run on this machine.
    """
    from onceflow.latency.backends import OnnxRuntimeBackend, TensorRTBackend, make_backend
    from onceflow.latency.calibration_data import target_calibration_images
    from onceflow.latency.protocol import LatencyStats
    from onceflow.latency.table import protocol_from_config

    if target.timings == "imported":  # the device is not attached: nothing to time here
        return not_timed, None, f"imported target {name}: not built here", None
    backend = make_backend(target, target_calibration_images(target, data, params.base.seed))
    backend.require(name)
    # The very protocol the target's latency table used (sessions, priming, clock), so measured
    # and predicted latency of a package describe the same warm steady state.
    protocol = protocol_from_config(params.latency, target, params.base.seed)

    def measure(onnx_bytes: bytes, model: nn.Module, shape: tuple[int, ...]) -> Mapping[str, float]:
        def once() -> LatencyStats:
            if isinstance(backend, OnnxRuntimeBackend):  # time the exact bytes that ship
                return backend.measure_onnx(onnx_bytes, shape, protocol, seed=params.base.seed)
            return backend.measure(model, shape, protocol)

        # A model timed alone spans a fraction of a second: one burst of load elsewhere on
        # the machine can inflate a whole run (seen: 1.6x). Noise only adds time, so keep the
        # fastest of a few runs (the table's interleaved samples already spread over minutes).
        return min((once() for _ in range(MEASURE_ROUNDS)), key=lambda s: s.median).to_json()

    quantize: QuantizeFn | None = None
    if isinstance(backend, OnnxRuntimeBackend) and target.precision == "int8":
        ort_backend = backend
        batch = min(32, target.options.int8_calibration_images)

        def quantize(onnx_bytes: bytes, chw: tuple[int, ...]) -> bytes:
            return ort_backend.deployable_onnx(onnx_bytes, (batch, *chw))

    if isinstance(backend, TensorRTBackend):
        return measure, backend.build_engine, "", None
    return measure, None, f"backend {target.backend} needs no engine", quantize


def package_target(
    supernet: Supernet,
    selection: Any,
    data: PreparedData,
    *,
    target_name: str,
    params: Params,
    lineage: Mapping[str, Any],
    content_hashes: Mapping[str, str],
    out_root: Path,
    created_at: str,
    selection_source: str = "selected.json",
) -> list[PackageResult]:
    """Package the target's selected archs into ``out_root/<model-id>/``; results in order.

    ``content_hashes`` (of the prepared data and the supernet) go into every model id together
    with the arch, the target, the package params, the seed and the onceflow version.
    """
    if target_name not in params.latency.targets:
        known = ", ".join(params.latency.targets)
        raise ConfigError(f"params latency.targets has no target {target_name!r} (known: {known})")
    target = params.latency.targets[target_name]
    cfg, seed = params.package, params.base.seed
    cands = parse_selection(selection, selection_source, supernet.space)
    if cfg.max_models is not None:
        cands = cands[: cfg.max_models]
    measure, engine_fn, skip, quantize = backend_fns(target, params, target_name, data)
    info = target_info(target_name, target)
    identity = {
        "target": {"name": target_name, **info.config.model_dump(mode="json")},
        "inputs": dict(content_hashes),
        "package": cfg.model_dump(mode="json"),
        "seed": seed,
        "onceflow": __version__,
    }
    teacher = None
    if cfg.finetune_epochs > 0:
        teacher = calibrated_subnet(supernet, supernet.max_arch(), data, cfg, seed)
    results: list[PackageResult] = []
    skipped: list[Int8ParityError] = []
    for cand in track(cands, f"package@{target_name}", unit="models", delay_s=0.0):
        arch = Arch.from_json(cand.arch_json)
        sub = calibrated_subnet(supernet, arch, data, cfg, seed)
        if cfg.finetune_epochs > 0:
            losses = finetune(
                sub,
                teacher,
                data,
                resolution=arch.resolution,
                teacher_resolution=supernet.max_arch().resolution,
                cfg=cfg,
                seed=seed,
            )
            log.info("fine-tuned %s: loss per epoch %s", arch, [round(v, 4) for v in losses])
            sub = _recalibrated(sub, arch, data, cfg, seed)
        try:
            result = build_package(
                sub,
                cand,
                data=data,
                target=info,
                cfg=cfg,
                identity=identity,
                lineage=lineage,
                measure=measure,
                out_root=out_root,
                created_at=created_at,
                build_engine=engine_fn,
                engine_skip_reason=skip,
                threads=params.base.threads,
                quantize=quantize,
            )
        except Int8ParityError as err:  # this pick only: int8 rounding broke it
            log.warning("%s; skipped, the target's other picks are packaged", err)
            skipped.append(err)
            continue
        results.append(result)
    if not results and skipped:
        raise skipped[-1]
    return results


def package_metrics(target: str, results: list[PackageResult]) -> dict[str, Any]:
    """``metrics/package/<target>.json``: every package's accuracy, latency and parity, and how
    far measured latency strays from the estimator's prediction (measured / predicted)."""
    ratios = [r.latency_ratio for r in results if r.latency_ratio is not None]
    drops = [r.quantization["accuracy_drop_pp"] for r in results if r.quantization]
    quant = (
        {
            "quantization_drop_pp_mean": float(np.mean(drops)),
            "quantization_drop_pp_max": float(np.max(drops)),
            "int8_min_agreement_vs_fp32": min(
                r.quantization["top1_agreement_vs_fp32"] for r in results if r.quantization
            ),
        }
        if drops
        else {}
    )
    return {
        "target": target,
        "n_packages": len(results),
        "all_parity_passed": all(r.parity.passed for r in results),
        **quant,
        "latency_ratio_median": float(np.median(ratios)) if ratios else None,
        "latency_ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "packages": [r.to_json() for r in results],
    }
