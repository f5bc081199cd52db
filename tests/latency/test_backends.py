from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from onceflow.config import LatencyTarget, TargetOptions
from onceflow.errors import BackendUnavailable
from onceflow.latency.backends import make_backend
from onceflow.latency.protocol import MeasureProtocol
from tests.latency.conftest import make_protocol

CUDA = torch.cuda.is_available()
TRT_OK, TRT_REASON = make_backend(
    LatencyTarget(backend="tensorrt", device="cuda", precision="fp16")
).available()


def tiny_conv(channels: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()


def check_stats(stats, repeats: int) -> None:
    assert stats.n == repeats
    assert 0 < stats.p10 <= stats.median <= stats.p90
    assert stats.median < 1000.0  # ms; a tiny conv is nowhere near a second


def test_ort_available_and_measures_tiny_graph(quick_protocol: MeasureProtocol) -> None:
    be = make_backend(LatencyTarget())
    assert be.available() == (True, "")
    check_stats(be.measure(tiny_conv(), (1, 4, 8, 8), quick_protocol), quick_protocol.repeats)
    env = be.environment()
    assert env["backend"] == "onnxruntime" and "onnxruntime" in env["versions"]


def test_ort_measures_each_model_of_a_batch() -> None:
    """One stats per model, in order, each from the protocol's repeats (that a bigger graph
    times slower is a speed comparison: benchmarks/bench_protocol.py)."""
    be = make_backend(LatencyTarget())
    small = nn.Conv2d(4, 4, 1).eval()
    big = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)]).eval()
    proto = make_protocol(warmup=1, repeats=4, number=1)
    stats = be.measure_many([(small, (1, 4, 8, 8)), (big, (1, 64, 32, 32))], proto)
    assert [s.n for s in stats] == [4, 4]
    assert all(0 < s.p10 <= s.median <= s.p90 for s in stats)


def test_ort_session_options_follow_the_target() -> None:
    t = LatencyTarget(
        threads=2,
        inter_op_threads=1,
        options=TargetOptions(session_config={"session.set_denormal_as_zero": "1"}),
    )
    so = make_backend(t).session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.set_denormal_as_zero") == "1"


def test_ort_missing_provider_is_unavailable_with_reason() -> None:
    be = make_backend(LatencyTarget(providers=("NoSuchExecutionProvider",)))
    ok, reason = be.available()
    assert not ok and "NoSuchExecutionProvider" in reason
    with pytest.raises(BackendUnavailable, match="target 'x'.*NoSuchExecutionProvider"):
        be.require("x")


def test_torch_cpu_available_and_measures(quick_protocol: MeasureProtocol) -> None:
    be = make_backend(LatencyTarget(backend="torch"))
    assert be.available() == (True, "")
    check_stats(be.measure(tiny_conv(), (1, 4, 8, 8), quick_protocol), quick_protocol.repeats)


def test_torch_cuda_availability_matches_torch() -> None:
    ok, reason = make_backend(LatencyTarget(backend="torch", device="cuda")).available()
    assert ok == CUDA
    if not CUDA:
        assert "cuda" in reason.lower()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("graphs", [False, True])
def test_torch_cuda_measures(graphs: bool, quick_protocol: MeasureProtocol) -> None:
    t = LatencyTarget(
        backend="torch", device="cuda", precision="fp16", options=TargetOptions(cuda_graphs=graphs)
    )
    check_stats(
        make_backend(t).measure(tiny_conv(), (1, 4, 8, 8), quick_protocol), quick_protocol.repeats
    )


def test_tensorrt_available_says_why_not() -> None:
    if importlib.util.find_spec("tensorrt") is None:
        assert not TRT_OK and "tensorrt" in TRT_REASON and "not installed" in TRT_REASON
    elif not CUDA:
        assert not TRT_OK and "CUDA" in TRT_REASON


@pytest.mark.gpu
@pytest.mark.skipif(not TRT_OK, reason=f"TensorRT backend unavailable: {TRT_REASON}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_measures_and_caches_engines(
    precision: str, tmp_path, quick_protocol: MeasureProtocol
) -> None:
    t = LatencyTarget(
        backend="tensorrt",
        device="cuda",
        precision=precision,
        options=TargetOptions(engine_cache_dir=str(tmp_path), int8_calibration_images=8),
    )
    images = torch.randn(8, 4, 8, 8).numpy()
    be = make_backend(t, calibration_images=images)
    model = tiny_conv()
    check_stats(be.measure(model, (1, 4, 8, 8), quick_protocol), quick_protocol.repeats)
    plans = list(tmp_path.glob("*.plan"))
    assert len(plans) == 1
    be.measure(model, (1, 4, 8, 8), quick_protocol)  # same graph -> the cached engine
    assert list(tmp_path.glob("*.plan")) == plans
    be.measure(tiny_conv(), (1, 4, 8, 8), quick_protocol)  # other weights -> a new engine
    assert len(list(tmp_path.glob("*.plan"))) == 2


def test_sessions_split_samples_and_pool_them() -> None:
    be = make_backend(LatencyTarget())
    proto = make_protocol(warmup=1, repeats=6, number=1, sessions=3)
    items = be.prepare_sessions(tiny_conv(), (1, 4, 8, 8), 3)
    assert len({id(it.session) for it in items}) == 3  # independent sessions
    wall, cpu = be.sample_many([(tiny_conv(), (1, 4, 8, 8)), (tiny_conv(2), (1, 2, 8, 8))], proto)
    assert wall.shape == cpu.shape == (2, 6)
    assert np.all(wall > 0) and np.all(cpu >= 0)
