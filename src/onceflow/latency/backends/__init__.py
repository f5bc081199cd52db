"""Latency backends behind one protocol; :func:`make_backend` picks one for a target."""

from __future__ import annotations

import numpy as np

from onceflow.config import LatencyTarget
from onceflow.latency.backends.base import Backend
from onceflow.latency.backends.ort import OnnxRuntimeBackend
from onceflow.latency.backends.torch_eager import TorchBackend
from onceflow.latency.backends.trt import TensorRTBackend

BACKENDS: dict[str, type[Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": TensorRTBackend,
    "torch": TorchBackend,
}


def make_backend(target: LatencyTarget, calibration_images: np.ndarray | None = None) -> Backend:
    """The backend for ``target``; check it with ``available()`` or ``require()``."""
    return BACKENDS[target.backend](target, calibration_images)


__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "TorchBackend",
    "make_backend",
]
