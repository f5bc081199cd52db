"""`dvc repro package@ort-cpu publish` in a temp copy of the repo, on tiny params.

Upstream outputs (prepared data, supernet, the search selection) are written directly, so the
test runs the two stages with --single-item and does not depend on training or search."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onceflow import stage
from onceflow.cli import app
from onceflow.package.manifest import load_manifest, verify_files
from onceflow.supernet import SearchSpace, Supernet, save_supernet
from stages import package as package_stage
from tests.conftest import copy_repo, run_dvc, write_prepared
from tests.package.conftest import TINY_SUPERNET

TINY = {
    "base": {"threads": 1},
    "supernet": TINY_SUPERNET,
    "latency": {"protocol": {"warmup": 2, "repeats": 5}},
    "package": {"bn_calibration_images": 64, "batch_size": 64, "max_models": 2},
    "publish": {"uri": "file://registry"},
}


def _upstream(repo: Path, target: str = "ort-cpu") -> SearchSpace:
    from onceflow.config import parse_params

    space = SearchSpace(parse_params(TINY).supernet, in_channels=1, n_classes=10, image_size=28)
    torch.manual_seed(0)
    save_supernet(Supernet(space), repo / "models" / "supernet")  # random weights suffice
    write_prepared(repo / "data" / "prepared", n_per_class=8)
    archs = [space.min_arch(), space.sample(np.random.default_rng(1))]
    sel = {"target": target, "selected": [
        {"budget_ms": 1.0 + i, "arch": str(a), "arch_json": a.to_json(),
         "predicted_accuracy": 0.5, "predicted_latency_ms": 0.5 + i}
        for i, a in enumerate(archs)
    ]}  # fmt: skip
    (repo / "search" / target).mkdir(parents=True)
    (repo / "search" / target / "selected.json").write_text(json.dumps(sel))
    # package's other deps, recorded in its lineage only (their dvc.lock records)
    _placeholder(repo / "models" / "predictor")
    return space


def _placeholder(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "placeholder.txt").write_text("an upstream output this test does not build\n")


@pytest.mark.slow
def test_dvc_repro_default_int8_target_table_and_package(tmp_path: Path) -> None:
    # The default params' ort-cpu-int8 target, end to end: a quantized table, int8 packages.
    # A random-weight supernet has near-tied logits, so int8 flips many top-1s (seen: 12.5%);
    # the agreement rule itself is tested in test_build.py, here only its plumbing.
    tiny = TINY | {
        "latency": {**TINY["latency"], "calibration_subnets": 4, "validation_subnets": 3},
        "package": {**TINY["package"], "int8_min_agreement": 0.5},
    }
    repo = copy_repo(tmp_path / "repo", tiny)
    _upstream(repo, "ort-cpu-int8")
    run_dvc(
        repo, "repro", "--single-item", "device_results@ort-cpu-int8", "latency_table@ort-cpu-int8",
        "package@ort-cpu-int8",
    )  # fmt: skip
    lut = json.loads((repo / "latency" / "ort-cpu-int8" / "lut.json").read_text())
    assert lut["environment"]["quantization"]["format"] == "QDQ"
    assert lut["target_config"]["options"]["int8_calibration_images"] == 64
    metrics = json.loads((repo / "metrics" / "package" / "ort-cpu-int8.details.json").read_text())
    assert metrics["n_packages"] == 2 and metrics["all_parity_passed"]
    assert metrics["int8_min_agreement_vs_fp32"] >= 0.5
    for p in metrics["packages"]:
        m = load_manifest(repo / "artifacts" / "ort-cpu-int8" / p["model_id"])
        assert m["precision"] == "int8" and m["quantization"]["passed"]
        assert p["quantization"] == m["quantization"]  # the details carry the manifest's


@pytest.mark.slow
def test_dvc_repro_package_and_publish(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo", TINY)
    _upstream(repo)
    _placeholder(repo / "latency" / "ort-cpu")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(git, cwd=repo, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)

    run_dvc(repo, "repro", "--single-item", "package@ort-cpu", "publish")

    headline = json.loads((repo / "metrics" / "package" / "ort-cpu.json").read_text())
    assert headline["models"] == 2 and headline["passed"] is True
    metrics = json.loads((repo / "metrics" / "package" / "ort-cpu.details.json").read_text())
    assert metrics["n_packages"] == 2 and metrics["all_parity_passed"]
    for p in metrics["packages"]:
        pkg = repo / "artifacts" / "ort-cpu" / p["model_id"]
        m = load_manifest(pkg)
        verify_files(pkg, m)
        assert m["lineage"]["git"]["commit"] == commit.stdout.strip()
        assert m["lineage"]["dvc_lock"]["supernet"]["path"] == "models/supernet"
        assert m["lineage"]["params"]["package"]["max_models"] == 2
        assert m["latency_ms"]["measured"] == p["latency_ms"] > 0
    assert json.loads((repo / "metrics" / "publish.json").read_text()) == {"models": 2}
    published = json.loads((repo / "metrics" / "publish.details.json").read_text())
    assert published["n_published"] == 2
    index = json.loads((repo / "registry" / "ort-cpu" / "index.json").read_text())
    assert sorted(e["model_id"] for e in index["models"]) == sorted(
        p["model_id"] for p in metrics["packages"]
    )

    res = CliRunner().invoke(app, ["ls", "--registry", f"file://{repo / 'registry'}"])
    assert res.exit_code == 0 and len(res.output.splitlines()) == 3

    again = run_dvc(repo, "repro", "--single-item", "package@ort-cpu", "publish")
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    before = (repo / "registry" / "ort-cpu" / "index.json").read_bytes()
    run_dvc(repo, "repro", "--force", "--single-item", "publish")
    assert json.loads((repo / "metrics" / "publish.details.json").read_text())["n_unchanged"] == 2
    assert (repo / "registry" / "ort-cpu" / "index.json").read_bytes() == before


def test_stage_error_is_one_line_and_writes_nothing(tmp_path: Path, caplog) -> None:
    (tmp_path / "params.yaml").write_text(json.dumps(TINY))
    argv = ["--params", str(tmp_path / "params.yaml"), "--target", "ort-cpu"]
    argv += [f"--{k}={tmp_path / k}" for k in ("supernet", "data", "selection", "latency")]
    argv += [f"--out={tmp_path / 'out'}", f"--metrics={tmp_path / 'm.json'}"]
    argv += [f"--details={tmp_path / 'm.details.json'}"]
    assert stage.run(package_stage.main, argv) == 2
    assert "not a trained supernet" in caplog.text or "no meta.json" in caplog.text
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()
