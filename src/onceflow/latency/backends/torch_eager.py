"""PyTorch eager backend: CPU (wall clock, fixed threads) or CUDA (CUDA events, optional graphs).

On CUDA every sample is bracketed by two CUDA events on the current stream, so host-side launch
jitter is not counted beyond what the GPU itself waits; with ``options.cuda_graphs`` the model is
captured once and replayed, which removes per-kernel launch overhead (what deployment with CUDA
graphs or TensorRT sees).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from onceflow.latency.backends.base import Backend, cpu_name


class TorchCpuTimed:
    def __init__(self, model: nn.Module, x: torch.Tensor, threads: int):
        self.model, self.x, self.threads = model, x, threads

    def time(self, n: int) -> float:
        torch.set_num_threads(self.threads)
        model, x = self.model, self.x
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(n):
                model(x)
            return time.perf_counter() - t0

    def close(self) -> None:
        self.model = None


class TorchCudaTimed:
    def __init__(self, model: nn.Module, x: torch.Tensor, cuda_graphs: bool):
        self.model, self.x = model, x
        self.graph: torch.cuda.CUDAGraph | None = None
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        if cuda_graphs:
            # Warm up on a side stream (as the CUDA-graph docs require), then capture one forward.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):
                    model(x)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph), torch.inference_mode():
                self.out = model(x)

    def time(self, n: int) -> float:
        with torch.inference_mode():
            self.start.record()
            if self.graph is not None:
                for _ in range(n):
                    self.graph.replay()
            else:
                for _ in range(n):
                    self.model(self.x)
            self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3

    def close(self) -> None:
        self.graph = None
        self.model = None


class TorchBackend(Backend):
    name = "torch"

    def available(self) -> tuple[bool, str]:
        if self.target.device == "cuda" and not torch.cuda.is_available():
            return (
                False,
                "device cuda requested but torch.cuda.is_available() is False (no GPU/driver)",
            )
        if self.target.device == "cpu" and self.target.precision == "fp16":
            return False, "fp16 on CPU is not a deployment path; use fp32 or device cuda"
        return True, ""

    def prepare(
        self, model: nn.Module, input_shape: Sequence[int]
    ) -> TorchCpuTimed | TorchCudaTimed:
        model = model.eval()
        dtype = torch.float16 if self.target.precision == "fp16" else torch.float32
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(tuple(int(d) for d in input_shape), generator=gen)
        if self.target.device == "cuda":
            model = model.to("cuda", dtype)
            return TorchCudaTimed(model, x.to("cuda", dtype), self.target.options.cuda_graphs)
        return TorchCpuTimed(model, x, self.target.threads)

    def environment(self) -> dict:
        cuda = self.target.device == "cuda"
        return {
            "backend": self.name,
            "device": torch.cuda.get_device_name() if cuda else cpu_name(),
            "cuda_graphs": bool(cuda and self.target.options.cuda_graphs),
            "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        }
