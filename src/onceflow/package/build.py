"""Build one deployable package from any static ``nn.Module`` (an extracted subnet in practice).

Steps: test accuracy in torch -> ONNX export (dynamic batch) -> parity ONNX Runtime vs torch
(fails the build) -> for int8 targets, static quantization and the int8 parity rule (top-1
agreement of the int8 model with the fp32 subnet >= ``package.int8_min_agreement``, fails the
build) -> test accuracy of the shipped model in ONNX Runtime (the number shipped; for int8 also
the fp32 accuracy and the drop) -> latency of the shipped bytes on the target's backend ->
TensorRT engine for TensorRT targets -> ``model.onnx``,
``[model.plan]``, ``README.md``, ``manifest.json`` written into ``<out_root>/<model-id>/`` in one
atomic rename. Latency measurement and engine building are injected, so this module knows no
backend and can be tested with a toy network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from onceflow import __version__
from onceflow.config import LatencyTarget, PackageConfig
from onceflow.data.prepared import PreparedData
from onceflow.inputs import to_input
from onceflow.io import atomic_dir, write_bytes_atomic, write_text_atomic
from onceflow.package.card import render_card
from onceflow.package.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from onceflow.package.manifest import (
    CARD,
    FORMAT_VERSION,
    ONNX,
    PLAN,
    file_entry,
    model_id,
    write_manifest,
)
from onceflow.package.parity import (
    Int8ParityError,
    ParityReport,
    check_parity,
    ort_session,
    require_parity,
    run_onnx,
    torch_logits,
)

log = logging.getLogger(__name__)

# (onnx bytes, torch model, NCHW input shape) -> latency stats in ms ({"median": ..., ...}).
MeasureFn = Callable[[bytes, nn.Module, tuple[int, ...]], Mapping[str, float]]
# (fixed-batch onnx bytes, NCHW input shape) -> serialized TensorRT engine.
EngineFn = Callable[[bytes, tuple[int, ...]], bytes]
# (fp32 dynamic-batch onnx bytes, CHW input) -> int8 onnx bytes (ONNX Runtime int8 targets).
QuantizeFn = Callable[[bytes, tuple[int, ...]], bytes]

# Warn when measured latency differs from the search-time prediction by more than this fraction
# of the prediction: budgets were met on predictions, users read measurements.
LATENCY_WARN_REL = 0.25


def latency_ratio(measured_ms: float, predicted_ms: float | None) -> float | None:
    """measured / predicted latency; None without a (positive) prediction."""
    return measured_ms / predicted_ms if predicted_ms is not None and predicted_ms > 0 else None


@dataclass(frozen=True)
class Candidate:
    """One selected subnet to package (an entry of ``search/<target>/selected.json``)."""

    arch_json: dict[str, Any]
    arch_str: str
    resolution: int
    budgets_ms: tuple[float, ...] = ()  # every budget this arch was selected for
    predicted_accuracy: float | None = None
    predicted_latency_ms: float | None = None


@dataclass(frozen=True)
class TargetInfo:
    """A package's target: its name and validated ``latency.targets.<name>`` entry."""

    name: str
    config: LatencyTarget

    @property
    def backend(self) -> str:
        return self.config.backend

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def precision(self) -> str:
        return self.config.precision

    @property
    def batch_size(self) -> int:
        return self.config.batch_size


@dataclass(frozen=True)
class PackageResult:
    model_id: str
    path: Path
    arch: str
    test_accuracy: float  # ONNX Runtime, the shipped model
    test_accuracy_torch: float
    latency_ms: float  # measured median
    predicted_latency_ms: float | None
    latency_ratio: float | None  # measured / predicted
    predicted_accuracy: float | None
    budget_ms: float | None
    parity: ParityReport
    engine: str  # "built", or why none was built
    precision: str = "fp32"
    # int8: accuracy of the fp32 ONNX model, int8 vs fp32 agreement, the drop (pp)
    quantization: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "arch": self.arch,
            "budget_ms": self.budget_ms,
            "precision": self.precision,
            "test_accuracy": self.test_accuracy,
            "test_accuracy_torch": self.test_accuracy_torch,
            "quantization": self.quantization,
            "predicted_accuracy": self.predicted_accuracy,
            "latency_ms": self.latency_ms,
            "predicted_latency_ms": self.predicted_latency_ms,
            "latency_ratio": self.latency_ratio,
            "parity": self.parity.to_json(),
            "engine": self.engine,
        }


def parity_images(data: PreparedData, n: int) -> np.ndarray:
    """``n`` uint8 images for the parity check: the test split first, topped up from val and
    train when it is smaller (only tiny datasets); fewer than ``n`` only if all splits are."""
    parts, have = [], 0
    for split in (data.test, data.val, data.train):
        take = np.asarray(split.images[: n - have])
        parts.append(take)
        have += len(take)
        if have >= n:
            break
    if have < n:
        log.warning("parity check on all %d images there are (params asks for %d)", have, n)
    return np.concatenate(parts)


def quantization_report(
    fp32_logits: np.ndarray, int8_logits: np.ndarray, min_agreement: float
) -> dict[str, Any]:
    """The int8 parity numbers: top-1 agreement with the fp32 subnet (the rule) and the
    largest logit difference (reported; int8 rounding makes it large by design)."""
    from onceflow.latency.quantize import QUANT_RECIPE

    agree = float(np.mean(fp32_logits.argmax(1) == int8_logits.argmax(1)))
    return {
        **QUANT_RECIPE,
        "n_images": len(fp32_logits),
        "top1_agreement_vs_fp32": agree,
        "min_agreement": min_agreement,
        "max_abs_logit_diff": float(np.max(np.abs(fp32_logits - int8_logits))),
        "passed": agree >= min_agreement,
    }


def require_int8_parity(report: Mapping[str, Any], what: str) -> None:
    """Raise Int8ParityError unless the int8 model agrees enough with the fp32 subnet."""
    if not report["passed"]:
        raise Int8ParityError(
            f"{what}: the int8 model agrees with the fp32 subnet on only "
            f"{100 * report['top1_agreement_vs_fp32']:.2f}% of {report['n_images']} images "
            f"(package.int8_min_agreement: {100 * report['min_agreement']:.2f}%); not packaging "
            "it (raise latency.targets.<T>.options.int8_calibration_images, or lower the threshold)"
        )


def input_spec(data: PreparedData, resolution: int) -> dict[str, Any]:
    meta = data.meta
    return {
        "name": INPUT_NAME,
        "shape": [None, meta.channels, resolution, resolution],
        "dtype": "float32",
        "layout": "NCHW",
        "resolution": resolution,
        "source_height": meta.height,
        "source_width": meta.width,
        "resize": "bilinear, align_corners=False, antialiased when shrinking",
        "normalization": {"scale": "1/255", "mean": list(meta.mean), "std": list(meta.std)},
        "class_names": list(meta.classes),
    }


@dataclass(frozen=True)
class _Verified:
    """The fp32 ONNX export of a subnet, its parity with torch and both test accuracies."""

    onnx: bytes
    parity: ParityReport
    acc_onnx: float
    acc_torch: float
    n_test: int


def _export_and_verify(
    model: nn.Module, chw: tuple[int, ...], data: PreparedData, cfg: PackageConfig,
    threads: int, what: str,
) -> _Verified:  # fmt: skip
    """Export fp32 ONNX, require parity with torch (ParityError), score both on test."""
    meta, res = data.meta, chw[-1]
    x_test = to_input(np.array(data.test.images), meta, res)  # a writable copy of the mmap
    y_test = np.asarray(data.test.labels)
    acc_torch = float(np.mean(torch_logits(model, x_test, cfg.batch_size).argmax(1) == y_test))
    onnx_bytes = export_onnx(model, chw, opset=cfg.opset)
    parity = check_parity(
        model,
        onnx_bytes,
        to_input(parity_images(data, cfg.parity_images), meta, res),
        atol=cfg.parity_atol,
        min_agreement=cfg.parity_min_agreement,
        threads=threads,
        batch_size=min(64, cfg.batch_size),
    )
    require_parity(parity, what)
    sess = ort_session(onnx_bytes, threads)
    acc = float(np.mean(run_onnx(sess, x_test.numpy(), cfg.batch_size).argmax(1) == y_test))
    return _Verified(onnx_bytes, parity, acc, acc_torch, len(y_test))


def _quantize_and_verify(
    model: nn.Module, fp32: _Verified, quantize: QuantizeFn, chw: tuple[int, ...],
    data: PreparedData, cfg: PackageConfig, threads: int, what: str,
) -> tuple[bytes, dict[str, Any], float]:  # fmt: skip
    """int8 bytes, the quantization report and the int8 test accuracy; Int8ParityError if
    the int8 model agrees too little with the fp32 subnet."""
    meta, res = data.meta, chw[-1]
    shipped = quantize(fp32.onnx, chw)
    int8_sess = ort_session(shipped, threads)
    x_par = to_input(parity_images(data, cfg.parity_images), meta, res)
    quant = quantization_report(
        torch_logits(model, x_par, min(64, cfg.batch_size)),
        run_onnx(int8_sess, x_par.numpy(), cfg.batch_size),
        cfg.int8_min_agreement,
    )
    require_int8_parity(quant, what)
    x_test = to_input(np.array(data.test.images), meta, res)
    y_test = np.asarray(data.test.labels)
    acc = float(np.mean(run_onnx(int8_sess, x_test.numpy(), cfg.batch_size).argmax(1) == y_test))
    quant["test_accuracy_fp32"] = fp32.acc_onnx
    quant["accuracy_drop_pp"] = 100 * (fp32.acc_onnx - acc)
    return shipped, quant, acc


@dataclass(frozen=True)
class _Timing:
    stats: dict[str, Any]
    timed: bool  # False: imported target, the device is not attached
    measured_ms: float  # the measured median, else the estimator's prediction
    ratio: float | None  # measured / predicted


def _time_shipped(
    measure: MeasureFn, shipped: bytes, model: nn.Module, shape: tuple[int, ...],
    cand: Candidate, target_name: str, mid: str,
) -> _Timing:  # fmt: skip
    """Time the shipped bytes; warn when they stray from the search-time prediction."""
    stats = dict(measure(shipped, model, shape))
    timed = bool(stats.get("timed", True))
    if not timed:
        return _Timing(stats, False, float(cand.predicted_latency_ms or "nan"), None)
    measured = float(stats["median"])
    ratio = latency_ratio(measured, cand.predicted_latency_ms)
    if ratio is not None and abs(ratio - 1.0) > LATENCY_WARN_REL:
        log.warning(
            "package %s (%s) for target %r: measured latency %.3f ms is %.2fx the predicted "
            "%.3f ms (more than %.0f%% off); if latency.protocol or the machine changed since "
            "latency_table@%s ran, rebuild the table",
            mid,
            cand.arch_str,
            target_name,
            measured,
            ratio,
            cand.predicted_latency_ms,
            100 * LATENCY_WARN_REL,
            target_name,
        )
    return _Timing(stats, True, measured, ratio)


def _engine(
    build_engine: EngineFn | None, skip_reason: str, model: nn.Module, chw: tuple[int, ...],
    cfg: PackageConfig, batch_size: int,
) -> tuple[bytes | None, str]:  # fmt: skip
    """A TensorRT engine of the fixed-batch export (or None), and what the manifest says."""
    if build_engine is None:
        return None, f"skipped: {skip_reason}"
    static = export_onnx(model, chw, opset=cfg.opset, dynamic_batch=False, batch_size=batch_size)
    plan = build_engine(static, (batch_size, *chw))
    return plan, "built" if plan is not None else f"skipped: {skip_reason}"


def _write_package(
    directory: Path, shipped: bytes, plan: bytes | None, manifest: dict[str, Any]
) -> None:
    """The package directory, whole or not at all: model, engine, card, manifest."""
    with atomic_dir(directory) as tmp:
        write_bytes_atomic(tmp / ONNX, shipped)
        if plan is not None:
            write_bytes_atomic(tmp / PLAN, plan)
        files = {n: file_entry(tmp / n) for n in (ONNX, PLAN) if (tmp / n).is_file()}
        write_text_atomic(tmp / CARD, render_card({**manifest, "files": files}))
        write_manifest(tmp, manifest)


def build_package(
    model: nn.Module,
    cand: Candidate,
    *,
    data: PreparedData,
    target: TargetInfo,
    cfg: PackageConfig,
    identity: Mapping[str, Any],
    lineage: Mapping[str, Any],
    measure: MeasureFn,
    out_root: Path,
    created_at: str,
    build_engine: EngineFn | None = None,
    engine_skip_reason: str = "not a TensorRT target",
    threads: int = 1,
    quantize: QuantizeFn | None = None,
) -> PackageResult:
    """Evaluate, export, verify, time and write one package; ParityError if ONNX disagrees
    (or, with ``quantize``, if the int8 model agrees too little with the fp32 subnet)."""
    res = cand.resolution
    chw = (data.meta.channels, res, res)
    mid = model_id(cand.arch_json, res, identity)
    what = f"package {mid} ({cand.arch_str}) for target {target.name!r}"
    model.eval()

    fp32 = _export_and_verify(model, chw, data, cfg, threads, what)
    shipped, quant, acc = fp32.onnx, None, fp32.acc_onnx
    if quantize is not None:
        shipped, quant, acc = _quantize_and_verify(
            model, fp32, quantize, chw, data, cfg, threads, what
        )
    timing = _time_shipped(
        measure, shipped, model, (target.batch_size, *chw), cand, target.name, mid
    )
    plan, engine = _engine(build_engine, engine_skip_reason, model, chw, cfg, target.batch_size)
    budget = min(cand.budgets_ms) if cand.budgets_ms else None

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_id": mid,
        "target": target.name,
        "backend": target.backend,
        "device": target.device,
        "precision": target.precision,
        "arch": {"string": cand.arch_str, "json": cand.arch_json},
        "test_accuracy": acc,
        "test_accuracy_torch": fp32.acc_torch,
        "n_test": fp32.n_test,
        "predicted_accuracy": cand.predicted_accuracy,
        "latency_ms": {
            "measured": timing.measured_ms,
            "predicted": cand.predicted_latency_ms,
            "ratio": timing.ratio,  # measured / predicted
            "budget": budget,
            "budgets": list(cand.budgets_ms),
            "batch_size": target.batch_size,
            "stats": timing.stats,
            **({} if timing.timed else {"timed_on_device": False}),
        },
        "parity": fp32.parity.to_json(),
        **({"quantization": quant} if quant is not None else {}),
        "input": input_spec(data, res),
        "output": {"name": OUTPUT_NAME, "shape": [None, data.meta.n_classes], "dtype": "float32"},
        "engine": engine,
        "lineage": {**lineage, "identity": dict(identity)},
        "onceflow_version": __version__,
        "created_at": created_at,
    }
    _write_package(out_root / mid, shipped, plan, manifest)
    log.info(
        "packaged %s (%s): test acc %.4f (torch %.4f), %.3f ms measured / %s predicted, parity "
        "max diff %.2g",
        mid,
        cand.arch_str,
        acc,
        fp32.acc_torch,
        timing.measured_ms,
        "n/a" if cand.predicted_latency_ms is None else f"{cand.predicted_latency_ms:.3f} ms",
        fp32.parity.max_abs_diff,
    )
    return PackageResult(
        model_id=mid,
        path=out_root / mid,
        arch=cand.arch_str,
        test_accuracy=acc,
        test_accuracy_torch=fp32.acc_torch,
        latency_ms=timing.measured_ms,
        predicted_latency_ms=cand.predicted_latency_ms,
        latency_ratio=timing.ratio,
        predicted_accuracy=cand.predicted_accuracy,
        budget_ms=budget,
        parity=fp32.parity,
        engine=engine,
        precision=target.precision,
        quantization=quant,
    )
