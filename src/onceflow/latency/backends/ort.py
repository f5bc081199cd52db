"""ONNX Runtime backend: export to ONNX in memory, one session per model, all graph optimizations.

Session options come from the target: fixed intra/inter-op thread counts, sequential execution,
``ORT_ENABLE_ALL``, spinning off by default (spinning workers steal a shared CPU from everyone).
``precision: int8`` times the statically quantized model (QDQ, per-channel int8 weights, see
:mod:`onceflow.latency.quantize`), calibrated on the backend's calibration images (real images
for whole subnets, shaped activations for inner layers; see
:mod:`onceflow.latency.calibration_data`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Sequence

import numpy as np
from torch import nn

from onceflow.latency.backends.base import Backend, cpu_name
from onceflow.latency.calibration_data import calibration_batches
from onceflow.latency.export import to_onnx_bytes
from onceflow.latency.protocol import LatencyStats, MeasureProtocol

log = logging.getLogger(__name__)


class OrtTimed:
    """An ORT session bound to one fixed random input."""

    def __init__(self, session: object, input_name: str, x: np.ndarray):
        self.session = session
        self.feeds = {input_name: x}

    def time(self, n: int) -> float:
        run, feeds = self.session.run, self.feeds
        t0 = time.perf_counter()
        for _ in range(n):
            run(None, feeds)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.session = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError as err:
            return False, f"onnxruntime is not installed ({err}); pip install onnxruntime"
        have = ort.get_available_providers()
        missing = [p for p in self.target.providers if p not in have]
        if missing:
            return False, f"execution provider(s) {missing} not in this onnxruntime build ({have})"
        if self.target.device == "cuda" and "CUDAExecutionProvider" not in self.target.providers:
            return False, "device cuda needs CUDAExecutionProvider in the target's providers"
        if self.target.precision == "fp16":
            return False, "onnxruntime targets run fp32 or int8 (fp16: use tensorrt)"
        return True, ""

    def deployable_onnx(self, onnx_bytes: bytes, input_shape: Sequence[int]) -> bytes:
        """The bytes this target runs: ``onnx_bytes`` itself (fp32), or its int8 QDQ
        quantization calibrated on batches of ``input_shape`` (int8)."""
        if self.target.precision != "int8":
            return onnx_bytes
        from onceflow.latency.quantize import quantize_onnx

        n = self.target.options.int8_calibration_images
        return quantize_onnx(
            onnx_bytes, calibration_batches(self.calibration_images, input_shape, n)
        )

    def session_options(self) -> object:
        import onnxruntime as ort

        t = self.target
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = t.threads
        so.inter_op_num_threads = t.inter_op_threads
        so.log_severity_level = 3
        spin = "1" if t.options.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        for key, value in t.options.session_config.items():
            so.add_session_config_entry(key, value)
        return so

    def session_from_onnx(self, onnx_bytes: bytes) -> object:
        import onnxruntime as ort

        return ort.InferenceSession(
            onnx_bytes, sess_options=self.session_options(), providers=list(self.target.providers)
        )

    def prepare_onnx(
        self, onnx_bytes: bytes, input_shape: Sequence[int], seed: int = 0
    ) -> OrtTimed:
        sess = self.session_from_onnx(onnx_bytes)
        x = np.random.default_rng(seed).standard_normal(tuple(input_shape)).astype(np.float32)
        return OrtTimed(sess, sess.get_inputs()[0].name, x)

    def prepare(self, model: nn.Module, input_shape: Sequence[int]) -> OrtTimed:
        return self.prepare_sessions(model, input_shape, 1)[0]

    def prepare_sessions(
        self, model: nn.Module, input_shape: Sequence[int], k: int
    ) -> list[OrtTimed]:
        # export (and quantize) once, compile k times
        onnx_bytes = self.deployable_onnx(to_onnx_bytes(model, input_shape), input_shape)
        return [self.prepare_onnx(onnx_bytes, input_shape, seed=i) for i in range(k)]

    def measure_onnx(
        self,
        onnx_bytes: bytes,
        input_shape: Sequence[int],
        protocol: MeasureProtocol,
        seed: int = 0,
    ) -> LatencyStats:
        """Latency of exact ONNX bytes (a shipped model) timed alone, under ``protocol``: the
        same sessions, priming and clock as a model measured in a latency table."""
        items = [
            self.prepare_onnx(onnx_bytes, input_shape, seed=seed + i)
            for i in range(protocol.sessions)
        ]
        wall, cpu = self.sample_sessions(items, protocol)
        return LatencyStats.from_samples((cpu if protocol.clock == "thread_cpu" else wall)[0])

    def environment(self) -> dict:
        import onnxruntime as ort

        from onceflow.latency.quantize import QUANT_RECIPE

        return {
            "backend": self.name,
            "device": cpu_name() if self.target.device == "cpu" else self.target.device,
            "providers": list(self.target.providers),
            "precision": self.target.precision,
            **({"quantization": QUANT_RECIPE} if self.target.precision == "int8" else {}),
            "versions": {
                "onnxruntime": ort.__version__,
                "onnx": importlib.metadata.version("onnx"),
                "torch": importlib.metadata.version("torch"),
            },
        }
