"""ONNX export of a static subnet for deployment: named input/output, dynamic batch axis.

The graph comes from :func:`onceflow.latency.export.to_onnx_bytes` (the TorchScript
exporter: byte-identical from run to run, so an unchanged model keeps its sha256).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from torch import nn

from onceflow.errors import OnceflowError
from onceflow.latency.export import to_onnx_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(OnceflowError):
    """The model could not be exported to a valid ONNX graph."""


def export_onnx(
    model: nn.Module,
    input_chw: Sequence[int],
    *,
    opset: int,
    dynamic_batch: bool = True,
    batch_size: int = 1,
) -> bytes:
    """ONNX bytes of ``model`` (eval mode) for float32 NCHW input ``(N, *input_chw)``.

    With ``dynamic_batch`` the batch dimension is symbolic (``batch``); otherwise it is fixed at
    ``batch_size`` (TensorRT engines are built from a fixed-shape graph).
    """
    if opset < 17:
        raise ExportError(f"ONNX opset {opset} is too old: packages need opset >= 17")
    was_training = model.training
    try:
        data = to_onnx_bytes(
            model,
            (batch_size, *input_chw),
            opset,
            names=(INPUT_NAME, OUTPUT_NAME),
            dynamic_batch=dynamic_batch,
        )
    except Exception as err:  # torch raises many types here; all mean "cannot export"
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}") from None
    finally:
        model.train(was_training)
    check_onnx(data, opset)
    return data


def check_onnx(data: bytes, min_opset: int) -> None:
    """Validate the graph with the ONNX checker and the opset and I/O names packages promise."""
    try:
        proto = onnx.load_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises ValidationError / DecodeError
        raise ExportError(f"exported ONNX graph is invalid: {err}") from None
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < min_opset:
        raise ExportError(f"exported ONNX graph has opset {opset}, need >= {min_opset}")
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"exported ONNX graph has inputs/outputs {names}, expected input/logits")
