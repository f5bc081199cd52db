"""Test accuracy of a subnet under a target's precision, measured as its package would be.

fp32: the BN-recalibrated subnet exported to ONNX and run by ONNX Runtime (what an fp32
package reports). int8 on ONNX Runtime: the same model quantized exactly as the target's
package stage quantizes it. Precisions this machine cannot run (TensorRT fp16/int8 without a
GPU) give None. Packaged picks already carry these numbers (``known_accuracies``), so only
foreign picks are evaluated here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onceflow.artifacts import (
    ArtifactError,
    field_error,
    manifest_file,
    package_stage,
)
from onceflow.config import LatencyTarget, Params
from onceflow.data.prepared import PreparedData
from onceflow.errors import BackendUnavailable
from onceflow.package.manifest import MANIFEST
from onceflow.supernet import Arch, Supernet

log = logging.getLogger(__name__)


def precision_key(target: LatencyTarget) -> str | None:
    """Targets with equal keys give a subnet the same accuracy; None: not measurable on CPU."""
    if target.precision == "fp32":
        return "fp32"
    if target.backend == "onnxruntime" and target.precision == "int8":
        return f"onnxruntime-int8-calib{target.options.int8_calibration_images}"
    return None


def known_accuracies(
    artifacts: Path, targets: Mapping[str, LatencyTarget]
) -> dict[tuple[Arch, str], float]:
    """(arch, precision key) -> test accuracy, from the packages' manifests under
    ``artifacts/<target>/<model-id>/``: the shipped precision, and fp32 for int8 packages."""
    out: dict[tuple[Arch, str], float] = {}
    for name, target in targets.items():
        key = precision_key(target)
        for path in sorted((artifacts / name).glob(f"*/{MANIFEST}")):
            m: dict[str, Any] = manifest_file(path, ArtifactError)
            try:
                arch = Arch.from_json(m["arch"]["json"])
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise field_error(path, err, package_stage(path)) from None
            if key is not None:
                out[(arch, key)] = float(m["test_accuracy"])
            q = m.get("quantization") or {}
            if "test_accuracy_fp32" in q:
                out[(arch, "fp32")] = float(q["test_accuracy_fp32"])
    return out


def accuracy_under_target(
    supernet: Supernet, arch: Arch, data: PreparedData, params: Params, target_name: str
) -> float | None:
    """Test accuracy of ``arch`` under ``target_name``'s precision (None if not runnable here)."""
    from onceflow.inputs import to_input
    from onceflow.package.export import export_onnx
    from onceflow.package.parity import ort_session, run_onnx
    from onceflow.package.pipeline import backend_fns, calibrated_subnet

    target = params.latency.targets[target_name]
    if precision_key(target) is None:
        return None
    cfg, threads = params.package, params.base.threads
    sub = calibrated_subnet(supernet, arch, data, cfg, params.base.seed)
    chw = (data.meta.channels, arch.resolution, arch.resolution)
    onnx_bytes = export_onnx(sub, chw, opset=cfg.opset)
    if target.precision == "int8":
        try:
            quantize = backend_fns(target, params, target_name, data)[3]
        except BackendUnavailable as err:
            log.warning("%s: %s", target_name, err)
            return None
        assert quantize is not None
        onnx_bytes = quantize(onnx_bytes, chw)
    x = to_input(np.array(data.test.images), data.meta, arch.resolution).numpy()
    pred = run_onnx(ort_session(onnx_bytes, threads), x, cfg.batch_size).argmax(1)
    acc = float(np.mean(pred == np.asarray(data.test.labels)))
    log.info("%s under %s (%s): test accuracy %.4f", arch, target_name, target.precision, acc)
    return acc
