"""TensorRT backend (TensorRT >= 10 Python API): ONNX -> engine (fp32/fp16/int8) -> timed.

Engines are built with ``trt.OnnxParser`` + ``build_serialized_network`` and cached on disk by
a content hash of (ONNX bytes, precision, workspace, TensorRT version, GPU name, calibration
data), so rebuilding a table or packaging a subnet never rebuilds an identical engine. Timing
brackets ``execute_async_v3`` on a dedicated stream with CUDA events. Device buffers are torch
CUDA tensors, which avoids a dependency on cuda-python. int8 uses an entropy calibrator fed
with :func:`onceflow.latency.calibration_data.calibration_batches` (prepared images resized to
the model's input when it takes images, seeded normal activations for isolated inner layers),
the same data the ONNX Runtime int8 path quantizes with.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from onceflow.errors import BackendUnavailable
from onceflow.io import write_bytes_atomic
from onceflow.latency.backends.base import Backend
from onceflow.latency.calibration_data import calibration_batches
from onceflow.latency.export import content_hash, to_onnx_bytes

log = logging.getLogger(__name__)


def _make_calibrator(trt: object, batches: list[np.ndarray]) -> object:
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches, self.i = batches, 0
            self.device = torch.empty(batches[0].shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.i >= len(self.batches):
                return None
            self.device.copy_(torch.from_numpy(self.batches[self.i]))
            self.i += 1
            return [int(self.device.data_ptr())]

        def read_calibration_cache(self) -> None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return EntropyCalibrator()


class TrtTimed:
    """A deserialized engine with bound device buffers; times ``execute_async_v3``."""

    def __init__(self, trt: object, plan: bytes, logger: object):
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendUnavailable(
                "TensorRT could not deserialize the engine (version mismatch?)"
            )
        self.context = self.engine.create_execution_context()
        self.buffers: list[torch.Tensor] = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = torch.from_numpy(
                np.empty(0, trt.nptype(self.engine.get_tensor_dtype(name)))
            ).dtype
            buf = torch.randn(shape, device="cuda").to(dtype)
            self.buffers.append(buf)
            self.context.set_tensor_address(name, int(buf.data_ptr()))
        self.stream = torch.cuda.Stream()
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def time(self, n: int) -> float:
        handle = self.stream.cuda_stream
        self.start.record(self.stream)
        for _ in range(n):
            if not self.context.execute_async_v3(handle):
                raise BackendUnavailable("TensorRT execute_async_v3 failed")
        self.end.record(self.stream)
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3

    def close(self) -> None:
        self.context = None
        self.engine = None
        self.buffers = []


class TensorRTBackend(Backend):
    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "the tensorrt Python package is not installed (pip install '.[tensorrt]')"
        if not torch.cuda.is_available():
            return False, "TensorRT needs a CUDA GPU and torch.cuda.is_available() is False"
        import tensorrt as trt

        if int(trt.__version__.split(".")[0]) < 10:
            return False, f"TensorRT {trt.__version__} found; this backend needs >= 10"
        return True, ""

    def _logger(self) -> object:
        import tensorrt as trt

        return trt.Logger(trt.Logger.WARNING)

    def build_engine(self, onnx_bytes: bytes, input_shape: Sequence[int]) -> bytes:
        """Serialized engine for ``onnx_bytes`` (from the cache when an identical build exists)."""
        import tensorrt as trt

        opts, precision = self.target.options, self.target.precision
        batches = (
            calibration_batches(self.calibration_images, input_shape, opts.int8_calibration_images)
            if precision == "int8"
            else []
        )
        key = content_hash(
            onnx_bytes,
            precision,
            str(opts.workspace_mb),
            trt.__version__,
            torch.cuda.get_device_name(),
            *(b.tobytes() for b in batches),
        )
        path = Path(opts.engine_cache_dir) / f"{key}.plan"
        if path.is_file():
            return path.read_bytes()
        logger = self._logger()
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"TensorRT could not parse the ONNX graph: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, opts.workspace_mb << 20)
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _make_calibrator(trt, batches)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailable(f"TensorRT failed to build a {precision} engine (see its log)")
        data = bytes(plan)
        write_bytes_atomic(path, data)
        log.debug("built TensorRT engine %s (%d bytes)", path.name, len(data))
        return data

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> TrtTimed:
        import tensorrt as trt

        plan = self.build_engine(to_onnx_bytes(model, input_shape), input_shape)
        return TrtTimed(trt, plan, self._logger())

    def environment(self) -> dict:
        import tensorrt as trt

        return {
            "backend": self.name,
            "device": torch.cuda.get_device_name(),
            "versions": {
                "tensorrt": trt.__version__,
                "torch": torch.__version__,
                "cuda": torch.version.cuda,
            },
        }
