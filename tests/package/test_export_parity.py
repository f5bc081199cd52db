"""ONNX export and the parity gate, including the failure path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from onceflow.config import LatencyTarget, PackageConfig
from onceflow.data.prepared import PreparedData
from onceflow.inputs import to_input
from onceflow.package.build import TargetInfo, build_package
from onceflow.package.export import export_onnx
from onceflow.package.parity import ParityError, check_parity, compare, ort_session, run_onnx
from tests.package.conftest import SmallCNN, candidate, fast_params

ORT_CPU = TargetInfo("ort-cpu", LatencyTarget())
PKG = PackageConfig()
GATE = {"atol": PKG.parity_atol, "min_agreement": PKG.parity_min_agreement}


def test_export_is_opset17_dynamic_batch_and_deterministic(small_cnn: nn.Module) -> None:
    data = export_onnx(small_cnn, (1, 28, 28), opset=PKG.opset)
    # same model -> same bytes -> same sha256
    assert export_onnx(small_cnn, (1, 28, 28), opset=PKG.opset) == data
    proto = onnx.load_from_string(data)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    sess = ort_session(data)
    for n in (1, 3, 7):  # the batch axis is dynamic
        out = sess.run(None, {"input": np.zeros((n, 1, 28, 28), np.float32)})[0]
        assert out.shape == (n, 10)


def test_parity_passes_for_a_faithful_export(small_cnn: nn.Module, data: PreparedData) -> None:
    x = to_input(np.array(data.test.images), data.meta, 28)
    onnx_bytes = export_onnx(small_cnn, (1, 28, 28), opset=PKG.opset)
    report = check_parity(small_cnn, onnx_bytes, x, **GATE)
    assert report.passed and report.n_images == len(x)
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0


class TracedBranch(SmallCNN):
    """Python control flow on data: the tracer bakes in the branch taken for the zero dummy
    input, so the exported graph disagrees with eager torch on real images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        return -logits if bool(x.abs().sum() > 0) else logits


def test_parity_failure_stops_the_package(data: PreparedData, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TracedBranch().eval()
    x = to_input(np.array(data.test.images), data.meta, 28)
    report = check_parity(model, export_onnx(model, (1, 28, 28), opset=PKG.opset), x, **GATE)
    assert not report.passed and report.top1_agreement < 0.999

    params = fast_params()
    with pytest.raises(ParityError, match=r"top-1 agreement .*need 99\.90%"):
        build_package(
            model, candidate(), data=data, target=ORT_CPU, cfg=params.package,
            identity={}, lineage={}, measure=lambda *a: {"median": 1.0}, out_root=tmp_path / "out",
            created_at="2024-01-01T00:00:00+00:00",
        )  # fmt: skip
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_compare_thresholds() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]] * 500, np.float32)
    assert compare(ref, ref + 5e-5, 1e-4, 0.999).passed
    assert not compare(ref, ref + 2e-4, 1e-4, 0.999).passed  # too far, same argmax
    flipped = ref.copy()
    flipped[0] = [0.0, 1.0]  # one disagreement in 1000 images: 99.9% agreement is enough...
    assert compare(ref, flipped, 2.0, 0.999).passed
    flipped[2] = [0.0, 1.0]  # ...two is not
    assert not compare(ref, flipped, 2.0, 0.999).passed
    with pytest.raises(ParityError, match="shape"):
        compare(ref, ref[:, :1], 1e-4, 0.999)


def test_run_onnx_batches(small_cnn: nn.Module) -> None:
    sess = ort_session(export_onnx(small_cnn, (1, 28, 28), opset=PKG.opset))
    x = np.random.default_rng(0).standard_normal((10, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(sess, x, 3), run_onnx(sess, x, 10), atol=1e-6)
