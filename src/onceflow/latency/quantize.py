"""ONNX Runtime static int8 quantization: QDQ format, per-channel int8 weights, uint8 activations.

``quantize_onnx`` turns float ONNX bytes into int8 QDQ bytes, calibrated on batches from
:mod:`onceflow.latency.calibration_data`. The graph is first pre-processed (ONNX Runtime's
``quant_pre_process``: ONNX shape inference + graph clean-up) so that every Conv bias is an
initializer: the TorchScript exporter shares biases through ``Identity`` nodes, which the
quantizer would otherwise leave in float (seen: 9 of 50 convs stayed fp32). Its symbolic shape
inference is skipped: ~90% of the pre-processing time, and these graphs hold no op that plain
ONNX shape inference cannot type. The latency table
(ONNX Runtime int8 targets) and the package stage call this one function, so a table entry and
a shipped model are quantized identically.

Weights use a 7-bit range (``reduce_range``). ONNX Runtime's u8s8 kernels on x86 CPUs without
VNNI (AVX2, AVX-512 without VNNI) add pairs of uint8 x int8 products in int16 and saturate on
full-range weights: on an AVX2 EPYC a subnet's int8 model agreed with its fp32 subnet on only
93% of images, on every calibration method and size; with 7-bit weights, 99.6%. A shipped
model may run on any x86 CPU, so the range is fixed rather than chosen from this machine's
flags (the cost on VNNI machines: a slightly coarser weight grid).

Activation ranges are the 99.99th percentile of each tensor's calibration values (ONNX
Runtime's ``Percentile`` calibration), not their extremes (``MinMax``). A supernet trained
longer grows rare large activations: with MinMax a handful of them set a tensor's scale and
crush every ordinary value onto a few steps. On a 10-epoch supernet's (n_random 2) three int8
picks MinMax agreed with the fp32 subnets on 94.1-95.3% of 256 images (the parity rule is
97%), and the figure swung with the calibration subset (96.1-97.3% on others, 64 to 256
images); the 99.99th percentile agreed on 97.7-99.2% at 64, 128, 256 and 512 images, with
test accuracy within 0.35 pp of fp32 on 2000 test images (99.999th: 94.9-95.7%, outliers again).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from onceflow.errors import BackendUnavailable

log = logging.getLogger(__name__)

# The activations' range: this percentile of each tensor's calibration values.
CALIB_PERCENTILE = 99.99
# What the recipe is; recorded in tables and package manifests (a table's resume key holds it).
QUANT_RECIPE = {
    "format": "QDQ",
    "weights": "int8 with a 7-bit range (reduce_range), per-channel, symmetric",
    "activations": "uint8, per-tensor, asymmetric",
    "calibration": "Percentile 99.99 (per tensor, 2048-bin histogram); MinMax for a model with a "
    "tensor whose calibration values have no spread (an untrained zero-initialized branch)",
    "tool": "onnxruntime.quantization.quantize_static",
}


# Held while the root logger and stdout are swapped: two threads quantizing at once would
# otherwise restore each other's swap and leave stdout pointing at a buffer.
_QUIET = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # onnxruntime.quantization logs advice ("consider pre-processing", "bias to be an
    # initializer") at WARNING on the root logger, and its histogram calibration prints its
    # progress to stdout, for every model: thousands of lines per table.
    with _QUIET:
        root = logging.getLogger()
        old = root.level
        root.setLevel(max(old, logging.ERROR))
        try:
            with contextlib.redirect_stdout(io.StringIO()):
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

    with tempfile.TemporaryDirectory(prefix="onceflow-quant-") as d, _quiet():
        src, pre, dst = (Path(d) / n for n in ("model.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(onnx_bytes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        kwargs = {
            "quant_format": QuantFormat.QDQ,
            "per_channel": True,
            "reduce_range": True,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
        }
        try:
            quantize_static(
                str(pre), str(dst), Reader(), **kwargs,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": CALIB_PERCENTILE},
            )  # fmt: skip
        except ValueError as err:  # a tensor without spread has no histogram (see the recipe)
            if "bins" not in str(err):
                raise
            log.debug("percentile calibration impossible (%s): MinMax for this model", err)
            quantize_static(
                str(pre), str(dst), Reader(), **kwargs, calibrate_method=CalibrationMethod.MinMax
            )
        return dst.read_bytes()
