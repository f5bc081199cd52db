"""ONNX Runtime int8: shared calibration data, QDQ quantization, the int8 backend, the schema."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from onceflow.config import LatencyTarget, TargetOptions, parse_params
from onceflow.errors import ConfigError
from onceflow.latency.backends import make_backend
from onceflow.latency.calibration_data import calibration_batches, target_calibration_images
from onceflow.latency.export import to_onnx_bytes
from onceflow.latency.quantize import quantize_onnx
from onceflow.package.parity import ort_session, run_onnx
from onceflow.supernet import Supernet, build_layer
from tests.conftest import write_prepared
from tests.latency.conftest import make_protocol

INT8 = LatencyTarget(precision="int8", options=TargetOptions(int8_calibration_images=8))


def op_types(onnx_bytes: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(onnx_bytes).graph.node]


def test_calibration_batches_real_images_resized_else_shaped_noise() -> None:
    images = np.random.default_rng(0).standard_normal((10, 1, 28, 28)).astype(np.float32)
    real = calibration_batches(images, (2, 1, 16, 16), 10)
    assert len(real) == 5 and all(b.shape == (2, 1, 16, 16) for b in real)
    assert abs(float(real[0].mean()) - float(images[:2].mean())) < 0.2  # resized, not noise
    noise = calibration_batches(images, (1, 8, 5, 5), 3)  # inner layer: 8 channels
    assert len(noise) == 3 and noise[0].shape == (1, 8, 5, 5)
    again = calibration_batches(None, (1, 8, 5, 5), 3)
    assert all(np.array_equal(a, b) for a, b in zip(noise, again, strict=True))  # seeded
    assert len(calibration_batches(images[:1], (4, 1, 28, 28), 1)) == 1  # filled to one batch


def test_target_calibration_images_only_for_int8(tmp_path) -> None:
    # fp32 targets never open the data (the latency stage passes the directory unopened)
    assert target_calibration_images(LatencyTarget(), tmp_path / "missing", seed=0) is None
    assert target_calibration_images(INT8, None, seed=0) is None
    data_dir = write_prepared(tmp_path / "data", n_per_class=2)
    images = target_calibration_images(INT8, data_dir, seed=0)
    assert images is not None and images.shape[0] == 8 and images.dtype == np.float32


def _quantized_max_subnet(space) -> bytes:
    net = Supernet(space).eval()
    arch = space.max_arch()
    shape = (1, 1, arch.resolution, arch.resolution)
    return quantize_onnx(
        to_onnx_bytes(net.extract(arch), shape), calibration_batches(None, shape, 4)
    )


def test_quantized_subnet_is_qdq_with_every_conv_weight_int8(tiny_space) -> None:
    q = _quantized_max_subnet(tiny_space)
    proto = onnx.load_from_string(q)
    onnx.checker.check_model(proto)
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs and all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)
    assert Counter(op_types(q))["QuantizeLinear"] >= len(convs)


def test_int8_weights_use_a_7_bit_range(tiny_space) -> None:
    # ONNX Runtime's u8s8 kernels on x86 without VNNI saturate on full-range int8 weights
    # (an AVX2 machine: 93% top-1 agreement with fp32; 7-bit weights: 99.6%).
    proto = onnx.load_from_string(_quantized_max_subnet(tiny_space))
    int8 = [
        onnx.numpy_helper.to_array(t)
        for t in proto.graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert int8, "no int8 weights in the quantized model"
    assert max(int(np.abs(w).max()) for w in int8) == 64  # full range would reach 127


def test_quantized_graph_does_not_depend_on_calibration_values(tiny_space) -> None:
    # Why LUT entries may calibrate on shaped synthetic activations: values pick scales only.
    spec = next(s for s in tiny_space.unique_layer_specs() if s.kind == "block" and s.se)
    shape = (1, spec.in_ch, spec.in_res, spec.in_res)
    fp32 = to_onnx_bytes(build_layer(spec).eval(), shape)
    rng = np.random.default_rng(1)
    relu_like = [np.maximum(rng.standard_normal(shape), 0).astype(np.float32) * 6 for _ in range(4)]
    a = quantize_onnx(fp32, calibration_batches(None, shape, 4))
    b = quantize_onnx(fp32, relu_like)
    assert op_types(a) == op_types(b) and a != b  # same graph, other scales


def test_ort_int8_backend_measures_quantized_model(tiny_space) -> None:
    be = make_backend(INT8, calibration_images=np.zeros((8, 1, 28, 28), np.float32))
    assert be.available() == (True, "")
    arch = tiny_space.min_arch()
    shape = (1, 1, arch.resolution, arch.resolution)
    proto = make_protocol(warmup=1, repeats=4, sessions=2)
    stats = be.measure(Supernet(tiny_space).extract(arch).eval(), shape, proto)
    assert stats.n == 4 and stats.median > 0
    assert be.environment()["quantization"]["format"] == "QDQ"
    fp32 = to_onnx_bytes(build_layer(tiny_space.stem_spec(12)).eval(), (1, 1, 12, 12))
    assert "QuantizeLinear" in op_types(be.deployable_onnx(fp32, (1, 1, 12, 12)))
    assert make_backend(LatencyTarget()).deployable_onnx(fp32, (1, 1, 12, 12)) == fp32


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ({"backend": "onnxruntime", "precision": "int8"}, True),
        ({"backend": "onnxruntime", "precision": "fp16"}, False),
        ({"backend": "torch", "precision": "int8"}, False),
    ],
)
def test_schema_accepts_int8_for_onnxruntime_only_among_cpu_backends(target, ok) -> None:
    raw = {"latency": {"targets": {"t": target}}}
    if ok:
        assert parse_params(raw).latency.targets["t"].precision == "int8"
    else:
        with pytest.raises(ConfigError, match="latency.targets.t"):
            parse_params(raw)


def test_rare_outlier_activations_do_not_set_the_int8_scale(capsys) -> None:
    # A supernet trained longer grows rare large activations. With MinMax calibration one of
    # them set a tensor's scale and crushed ordinary values (int8 picks agreed with fp32 on
    # 94-95% of images, under the 97% rule); the 99.99th percentile ignores it.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ).eval()  # fmt: skip
    shape = (8, 1, 16, 16)
    fp32 = to_onnx_bytes(model, shape)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(shape).astype(np.float32) for _ in range(8)]
    # One input value in 16,384, in a corner: it reaches one output of each conv (a rare
    # activation everywhere, under 0.01% of each tensor). MinMax: off by ~74%.
    batches[3][2, 0, 0, 0] = 1000.0
    sess = ort_session(quantize_onnx(fp32, batches))
    x = rng.standard_normal((64, 1, 16, 16)).astype(np.float32)
    want = model(torch.from_numpy(x)).detach().numpy()
    got = run_onnx(sess, x, 8)
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < 0.1, f"int8 outputs off by {err:.0%} of their range: the outlier set the scale"
    assert capsys.readouterr().out == ""  # ONNX Runtime's calibration progress is not printed
