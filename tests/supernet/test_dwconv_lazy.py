"""numba only where it is used: the training kernel imports it on first use; no other stage
imports it, and without numba the weight gradient falls back to torch's own convolution (logged)
with the same values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT, tool_env

STAGE_MODULES = ("prepare", "train_supernet", "latency_table", "predictor", "search", "package",
                 "specialize_report", "publish", "report")  # fmt: skip


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = tool_env(OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO_ROOT)  # fmt: skip


def test_no_stage_imports_numba() -> None:
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module('stages.{m}')\n" for m in STAGE_MODULES)
    code += "print('numba' in sys.modules, 'llvmlite' in sys.modules)"
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "False"]


_CASE = """
import logging, sys
import torch
from onceflow.supernet.dwconv import depthwise_conv2d

def grads():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 12, 7, 7, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(12, 1, 5, 5, generator=g)
    x.requires_grad_(); w.requires_grad_()
    y = depthwise_conv2d(x, w, 2, 2)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, w.grad, type(y.grad_fn).__name__
"""


def _grads_here() -> tuple[torch.Tensor, ...]:
    scope: dict = {}
    exec(_CASE, scope)  # the same case as the subprocess runs
    return scope["grads"]()


def test_without_numba_the_weight_gradient_is_torchs_and_the_same(tmp_path: Path) -> None:
    y1, gx1, gw1, fn1 = _grads_here()
    assert "DepthwiseConv" in fn1  # here numba is installed: the kernel ran
    out = tmp_path / "grads.pt"
    code = (
        "import sys\nsys.modules['numba'] = None  # as if not installed\n"
        + _CASE
        + (
            "logging.basicConfig(level='WARNING')\n"
            "y, gx, gw, fn = grads()\n"
            "grads()  # a second use warns no more\n"
            "torch.save({'y': y, 'gx': gx, 'gw': gw, 'fn': fn}, sys.argv[1])\n"
        )
    )
    proc = _python(code, str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("numba is unavailable") == 1, proc.stderr
    assert "torch's own convolution" in proc.stderr
    got = torch.load(out)
    assert "DepthwiseConv" not in got["fn"]  # plain F.conv2d
    torch.testing.assert_close(got["y"], y1)
    torch.testing.assert_close(got["gx"], gx1)
    torch.testing.assert_close(got["gw"], gw1, rtol=1e-4, atol=1e-4)
