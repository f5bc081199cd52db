# ruff: noqa: F811 -- the registry fixtures are imported here and used as parameters
"""build_package end to end with a small CNN and the real ONNX Runtime latency backend; the
published package, pulled back, reproduces its manifest accuracy in plain onnxruntime."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onceflow.config import LatencyTarget
from onceflow.data.prepared import PreparedData
from onceflow.errors import RegistryError
from onceflow.io import sha256_file
from onceflow.package.build import (
    PackageResult,
    TargetInfo,
    build_package,
    quantization_report,
    require_int8_parity,
)
from onceflow.package.manifest import load_manifest, validate_manifest, verify_files
from onceflow.package.parity import ParityError
from onceflow.package.pipeline import backend_fns
from onceflow.registry import open_store, publish_package, pull_model
from tests.package.conftest import candidate, fast_params
from tests.registry.fixtures import aws_env, moto_endpoint, registry_uri, s3_uri  # noqa: F401

ORT_CPU = TargetInfo("ort-cpu", LatencyTarget())

IDENTITY = {"inputs": {"data": "d" * 8, "supernet": "s" * 8}, "seed": 0}


def _build(
    model: nn.Module, data: PreparedData, out: Path, identity: dict = IDENTITY
) -> PackageResult:
    params = fast_params()
    measure, engine, skip, _ = backend_fns(LatencyTarget(), params, "ort-cpu")
    return build_package(
        model, candidate(), data=data, target=ORT_CPU, cfg=params.package,
        identity=identity, lineage={"git": {"commit": None}}, measure=measure, out_root=out,
        created_at="2024-01-01T00:00:00+00:00", build_engine=engine, engine_skip_reason=skip,
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(
    small_cnn: nn.Module, data: PreparedData, tmp_path_factory: pytest.TempPathFactory
) -> PackageResult:
    return _build(small_cnn, data, tmp_path_factory.mktemp("artifacts") / "ort-cpu")


def test_package_contents(built: PackageResult, data: PreparedData) -> None:
    m = load_manifest(built.path)
    verify_files(built.path, m)
    assert sorted(p.name for p in built.path.iterdir()) == [
        "README.md",
        "manifest.json",
        "model.onnx",
    ]
    assert m["model_id"] == built.path.name and built.model_id.startswith("r28-")
    assert m["target"] == "ort-cpu" and m["backend"] == "onnxruntime"
    assert m["test_accuracy"] == built.test_accuracy > 0.3  # well above chance (0.1)
    assert abs(m["test_accuracy"] - m["test_accuracy_torch"]) <= 1 / len(data.test)
    assert m["latency_ms"]["measured"] > 0 and m["latency_ms"]["predicted"] == 0.1
    assert m["latency_ms"]["ratio"] == pytest.approx(m["latency_ms"]["measured"] / 0.1)
    assert built.to_json()["latency_ratio"] == m["latency_ms"]["ratio"] == built.latency_ratio
    # The table's protocol: 5 repeats split over 3 sessions -> 2 samples each, pooled.
    assert m["latency_ms"]["budget"] == 2.0 and m["latency_ms"]["stats"]["n"] == 6
    assert m["parity"]["passed"] and m["parity"]["n_images"] == 256  # 60 test + 196 train
    assert m["input"]["shape"] == [None, 1, 28, 28] and m["input"]["class_names"][0] == "class0"
    assert m["input"]["normalization"]["mean"] == [0.2]
    assert m["engine"].startswith("skipped")
    assert m["lineage"]["identity"] == IDENTITY and m["onceflow_version"]
    assert set(m["files"]) == {"model.onnx", "README.md"}
    card = (built.path / "README.md").read_text()
    assert f"# {built.model_id}" in card and "ort.InferenceSession" in card
    assert f"{100 * built.test_accuracy:.2f}%" in card


def test_package_records_and_warns_about_measured_over_predicted_latency(
    small_cnn: nn.Module, data: PreparedData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = fast_params()

    def build(predicted: float | None, out: str) -> PackageResult:
        return build_package(
            small_cnn, replace(candidate(), predicted_latency_ms=predicted), data=data,
            target=ORT_CPU, cfg=params.package, identity=IDENTITY, lineage={},
            measure=lambda *_: {"median": 0.3, "n": 1}, out_root=tmp_path / out,
            created_at="2024-01-01T00:00:00+00:00",
        )  # fmt: skip

    with caplog.at_level(logging.WARNING, logger="onceflow.package.build"):
        slow = build(0.1, "slow")
    assert slow.latency_ratio == pytest.approx(3.0)
    assert slow.to_json()["latency_ratio"] == pytest.approx(3.0)
    m = load_manifest(slow.path)
    assert m["latency_ms"]["ratio"] == pytest.approx(3.0)
    assert "(measured / predicted 3.00)" in (slow.path / "README.md").read_text()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert slow.model_id in warning and "0.300 ms" in warning and "0.100 ms" in warning

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onceflow.package.build"):
        close = build(0.28, "close")  # 7% off: within the 25% tolerance, no warning
        unknown = build(None, "unknown")
    assert close.latency_ratio == pytest.approx(0.3 / 0.28) and not caplog.records
    assert unknown.latency_ratio is None
    assert load_manifest(unknown.path)["latency_ms"]["ratio"] is None

    m["latency_ms"]["ratio"] = 1.0  # not measured / predicted
    with pytest.raises(RegistryError, match=r"latency_ms.ratio.*measured / predicted = 3"):
        validate_manifest(m, "m.json")


def test_rebuild_is_identical_and_ids_follow_lineage(
    built: PackageResult, small_cnn: nn.Module, data: PreparedData, tmp_path: Path
) -> None:
    again = _build(small_cnn, data, tmp_path / "a")
    assert again.model_id == built.model_id
    assert sha256_file(again.path / "model.onnx") == sha256_file(built.path / "model.onnx")
    assert (again.path / "README.md").read_bytes() != b""
    other = _build(small_cnn, data, tmp_path / "b", identity={**IDENTITY, "seed": 1})
    assert other.model_id != built.model_id


def test_pulled_model_reproduces_manifest_accuracy(
    built: PackageResult, data: PreparedData, registry_uri: str, tmp_path: Path
) -> None:
    store = open_store(registry_uri)
    assert publish_package(store, built.path).status == "published"
    dest = tmp_path / "pulled"
    pull_model(store, "ort-cpu", dest, max_latency_ms=1e6)
    m = json.loads((dest / "manifest.json").read_text())
    # Preprocess from the manifest's input spec alone (numpy), as a user would.
    norm = m["input"]["normalization"]
    x = (np.asarray(data.test.images) / 255.0 - np.array(norm["mean"])) / np.array(norm["std"])
    x = x.astype(np.float32).transpose(0, 3, 1, 2)
    sess = ort.InferenceSession(str(dest / "model.onnx"), providers=["CPUExecutionProvider"])
    pred = sess.run([m["output"]["name"]], {m["input"]["name"]: x})[0].argmax(1)
    acc = float(np.mean(pred == np.asarray(data.test.labels)))
    assert abs(100 * acc - 100 * m["test_accuracy"]) <= 0.1


def test_int8_target_ships_the_quantized_model_with_its_accuracy_drop(
    small_cnn: nn.Module, data: PreparedData, tmp_path: Path
) -> None:
    params = fast_params()
    target = LatencyTarget(precision="int8", options={"int8_calibration_images": 64})
    measure, engine, skip, quantize = backend_fns(target, params, "ort-int8", data)
    assert quantize is not None and engine is None

    def build(cfg: object, out: str) -> PackageResult:
        return build_package(
            small_cnn, candidate(), data=data,
            target=TargetInfo("ort-int8", LatencyTarget(precision="int8")),
            cfg=cfg, identity=IDENTITY, lineage={}, measure=measure, out_root=tmp_path / out,
            created_at="2024-01-01T00:00:00+00:00", engine_skip_reason=skip, quantize=quantize,
        )  # fmt: skip

    res = build(params.package, "ok")
    m = load_manifest(res.path)
    verify_files(res.path, m)
    q = m["quantization"]
    assert m["precision"] == "int8" and q["format"] == "QDQ" and q["passed"]
    assert q["top1_agreement_vs_fp32"] >= params.package.int8_min_agreement
    assert res.to_json()["quantization"] == q
    assert f"drop {q['accuracy_drop_pp']:.2f} pp" in (res.path / "README.md").read_text()
    # The file that ships is the int8 model, and its accuracy is the manifest's.
    sess = ort.InferenceSession(str(res.path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(res.path / "model.onnx").graph.node}
    x = (np.asarray(data.test.images) / 255.0 - 0.2) / 0.3
    x = x.astype(np.float32).transpose(0, 3, 1, 2)
    labels = np.asarray(data.test.labels)
    int8_acc = float(np.mean(sess.run(None, {"input": x})[0].argmax(1) == labels))
    assert int8_acc == pytest.approx(m["test_accuracy"])
    # The drop against the fp32 subnet, measured here on the same images (torch; the fp32 ONNX
    # the package checked agrees with it to within an image), not the manifest's own fields.
    with torch.no_grad():
        fp32_acc = float(np.mean(small_cnn(torch.from_numpy(x)).argmax(1).numpy() == labels))
    one_image = 1 / len(labels)
    assert q["test_accuracy_fp32"] == pytest.approx(fp32_acc, abs=one_image + 1e-9)
    assert q["accuracy_drop_pp"] == pytest.approx(100 * (fp32_acc - int8_acc), abs=100 * one_image)


def test_int8_parity_rule_refuses_low_agreement() -> None:
    fp32 = np.eye(10)[np.arange(100) % 10]
    int8 = fp32.copy()
    int8[:5] = np.roll(int8[:5], 1, axis=1)  # 5 of 100 top-1 flips
    report = quantization_report(fp32, int8, 0.97)
    assert report["top1_agreement_vs_fp32"] == pytest.approx(0.95) and not report["passed"]
    with pytest.raises(ParityError, match=r"only 95.00% of 100 images.*int8_min_agreement"):
        require_int8_parity(report, "package x")
    require_int8_parity(quantization_report(fp32, int8, 0.95), "package x")


def _tensorrt_ready() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None


@pytest.mark.gpu
@pytest.mark.skipif(not _tensorrt_ready(), reason="needs a CUDA GPU and the tensorrt package")
def test_tensorrt_target_ships_an_engine(
    small_cnn: nn.Module, data: PreparedData, tmp_path: Path
) -> None:
    params = fast_params()
    target = LatencyTarget(backend="tensorrt", device="cuda", precision="fp16")
    measure, engine, skip, _ = backend_fns(target, params, "trt-fp16")
    res = build_package(
        small_cnn, candidate(), cfg=params.package, data=data,
        target=TargetInfo("trt-fp16", target), identity=IDENTITY, lineage={},
        measure=measure, out_root=tmp_path,
        created_at="2024-01-01T00:00:00+00:00", build_engine=engine, engine_skip_reason=skip,
    )  # fmt: skip
    m = load_manifest(res.path)
    assert m["engine"] == "built" and "model.plan" in m["files"]
    verify_files(res.path, m)


def test_imported_target_package_is_not_timed_and_its_card_says_so(
    small_cnn: nn.Module, data: PreparedData, tmp_path: Path
) -> None:
    """A device that is not attached: no timing here, the estimator's latency ships, marked."""
    phone = LatencyTarget(timings="imported", estimator="measured")
    params = fast_params()
    measure, engine, skip, quantize = backend_fns(phone, params, "phone")
    assert engine is None and quantize is None and "imported" in skip
    res = build_package(
        small_cnn, candidate(), data=data, target=TargetInfo("phone", phone), cfg=params.package,
        identity=IDENTITY, lineage={}, measure=measure, out_root=tmp_path,
        created_at="2024-01-01T00:00:00+00:00", build_engine=engine, engine_skip_reason=skip,
    )  # fmt: skip
    m = load_manifest(res.path)
    lat = m["latency_ms"]
    assert lat["timed_on_device"] is False and lat["measured"] == lat["predicted"] == 0.1
    assert lat["ratio"] is None and res.latency_ratio is None
    card = (res.path / "README.md").read_text()
    assert "was not timed on the device" in card and "no on-device latency check" in card
    assert m["parity"]["passed"]  # accuracy parity still runs (ONNX Runtime here)
