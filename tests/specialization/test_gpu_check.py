"""scripts/gpu_check.sh: skips cleanly without CUDA; its check functions run (on CPU here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess

import pytest
import torch

from tests.conftest import REPO_ROOT, tool_env


def _module():
    spec = importlib.util.spec_from_file_location(
        "gpu_check", REPO_ROOT / "scripts" / "gpu_check.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the checks would run")
def test_without_cuda_everything_is_skipped_with_the_reason() -> None:
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "gpu_check.sh")],
        capture_output=True, text=True, env=tool_env(), timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["cuda"] is False and report["ran"] == {} and report["failed"] == {}
    assert set(report["skipped"]) == set(_module().CHECKS)
    assert all("no CUDA" in why for why in report["skipped"].values())


def test_check_functions_run_on_cpu(tmp_path) -> None:
    mod = _module()
    data = mod.synthetic_prepared(tmp_path / "prepared", n_per_class=8)
    table = mod.table_check("t", {"backend": "torch", "device": "cpu"}, data)
    assert table["lut_entries"] > 0 and -1.0 <= table["kendall_tau"] <= 1.0
    small = mod.table_check("s", {"backend": "onnxruntime", "precision": "int8"}, data, True)
    assert 0 < small["lut_entries"] < table["lut_entries"]  # the TensorRT-sized space
    train = mod.training_check(data, device="cpu", steps=2)
    assert train["steps"] == 2 and train["steps_per_s"] > 0
