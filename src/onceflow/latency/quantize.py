"""ONNX Runtime static int8 quantization: QDQ format, per-channel int8 weights, uint8 activations.

``quantize_onnx`` turns float ONNX bytes into int8 QDQ bytes, calibrated (MinMax) on batches
from :mod:`onceflow.latency.calibration_data`. The graph is first pre-processed (ONNX Runtime's
``quant_pre_process``: ONNX shape inference + graph clean-up) so that every Conv bias is an
initializer: the TorchScript exporter shares biases through ``Identity`` nodes, which the
quantizer would otherwise leave in float (seen: 9 of 50 convs stayed fp32). Its symbolic shape
inference is skipped: ~90% of the pre-processing time, and these graphs hold no op that plain
ONNX shape inference cannot type. The latency table
(ONNX Runtime int8 targets) and the package stage call this one function, so a table entry and
a shipped model are quantized identically.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from onceflow.errors import BackendUnavailable

log = logging.getLogger(__name__)

# What the recipe is; recorded in tables and package manifests.
QUANT_RECIPE = {
    "format": "QDQ",
    "weights": "int8, per-channel, symmetric",
    "activations": "uint8, per-tensor, asymmetric",
    "calibration": "MinMax",
    "tool": "onnxruntime.quantization.quantize_static",
}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # onnxruntime.quantization logs advice ("consider pre-processing", "bias to be an
    # initializer") at WARNING on the root logger for every model; thousands per table.
    root = logging.getLogger()
    old = root.level
    root.setLevel(max(old, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(old)


def quantize_onnx(onnx_bytes: bytes, batches: Sequence[np.ndarray]) -> bytes:
    """int8 QDQ ONNX bytes of float ``onnx_bytes``, calibrated on ``batches`` (float32 arrays
    of the model's input shape). Raises BackendUnavailable if ONNX Runtime lacks quantization."""
    if not batches:
        raise ValueError("int8 quantization needs at least one calibration batch")
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as err:
        raise BackendUnavailable(f"onnxruntime quantization is unavailable: {err}") from None

    input_name = onnx.load_from_string(onnx_bytes).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{input_name: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory(prefix="onceflow-quant-") as d, _quiet_root_logger():
        src, pre, dst = (Path(d) / n for n in ("model.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        return dst.read_bytes()
