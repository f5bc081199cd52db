"""Headline metrics stay a few shared columns; details go next to them; readers merge both."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from onceflow import metrics as m
from tests.conftest import tool_env

DATA = {"n_train": 54000, "n_val": 6000, "n_test": 10000, "n_classes": 10,
        "validation_success": True}  # fmt: skip
SUPERNET = {"val_acc_max": 0.91234, "val_acc_min": 0.8512, "val_acc_mid": 0.889,
            "train_seconds": 1520.4, "epochs": 3.0, "params": 123456}  # fmt: skip
LATENCY = {"target": "ort-cpu", "backend": "onnxruntime", "kendall_tau": 0.9123,
           "within_10pct": 0.94, "mape": 0.041, "measured_ms_range": [0.3, 1.9]}  # fmt: skip
PACKAGE = {"target": "ort-cpu", "n_packages": 3, "all_parity_passed": True, "packages": [
    {"model_id": f"m{i}", "test_accuracy": a, "latency_ratio": r}
    for i, (a, r) in enumerate([(0.85, 1.02), (0.88, 1.15), (0.9, 0.95)])]}  # fmt: skip
PUBLISH = {"registry": "file:///x/registry", "n_packages": 3, "n_published": 3,
           "n_unchanged": 0, "packages": []}  # fmt: skip


def test_details_path_sits_next_to_the_headline() -> None:
    assert m.details_path("metrics/latency/ort-cpu.json") == Path(
        "metrics/latency/ort-cpu.details.json"
    )
    assert m.details_path("metrics/data.json").name == "data.details.json"


def test_headlines_use_the_shared_vocabulary_and_scalars_only() -> None:
    assert m.data_headline(DATA) == {"passed": True, "images": 70000}
    assert m.supernet_headline(SUPERNET) == {"top1": 0.91234}
    assert m.latency_headline(LATENCY) == {"kendall_tau": 0.9123, "within_10pct": 0.94}
    assert m.package_headline(PACKAGE) == {
        "models": 3, "top1": 0.9, "passed": True, "within_10pct": pytest.approx(2 / 3)
    }  # fmt: skip
    assert m.publish_headline(PUBLISH) == {"models": 3}


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "package" / "ort-cpu.json"
    details = m.write_metrics(path, m.package_headline(PACKAGE), PACKAGE)
    assert details == tmp_path / "metrics" / "package" / "ort-cpu.details.json"
    assert json.loads(path.read_text())["within_10pct"] == 0.6667  # rounded for reading
    assert json.loads(details.read_text()) == PACKAGE
    merged = m.read_metrics(path)
    assert merged is not None and merged["packages"] == PACKAGE["packages"]
    assert merged["top1"] == 0.9
    assert m.read_metrics(tmp_path / "metrics" / "nope.json") is None
    # a file from before the split (everything in the headline file) reads the same
    (tmp_path / "old.json").write_text(json.dumps(PUBLISH))
    assert m.read_metrics(tmp_path / "old.json") == PUBLISH


def test_write_rejects_non_scalars_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="scalars"):
        m.write_metrics(tmp_path / "a.json", {"top1": [0.9]}, {})
    with pytest.raises(ValueError, match="HEADLINE_KEYS"):
        m.write_metrics(tmp_path / "a.json", {"val_acc_max": 0.9}, {})
    assert not (tmp_path / "a.json").exists()
    m.write_metrics(tmp_path / "a.json", {"top1": float("nan")}, {})
    assert json.loads((tmp_path / "a.json").read_text()) == {"top1": None}


def test_dvc_metrics_show_fits_a_terminal(tmp_path: Path) -> None:
    """The real `dvc metrics show` over this module's headlines of a default run (two CPU
    targets) prints a table at most 100 characters wide."""
    env = tool_env()
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    subprocess.run(["dvc", "init", "-q"], cwd=tmp_path, check=True, env=env)
    files = {"metrics/data.json": m.data_headline(DATA),
             "metrics/supernet.json": m.supernet_headline(SUPERNET),
             "metrics/publish.json": m.publish_headline(PUBLISH)}  # fmt: skip
    for t in ("ort-cpu", "ort-cpu-int8"):
        files[f"metrics/latency/{t}.json"] = m.latency_headline(LATENCY)
        files[f"metrics/package/{t}.json"] = m.package_headline(PACKAGE)
    for name, head in files.items():
        m.write_metrics(tmp_path / name, head, {"big": list(range(100))})
    (tmp_path / "dvc.yaml").write_text("metrics:\n" + "".join(f"  - {f}\n" for f in files))
    out = subprocess.run(
        ["dvc", "metrics", "show"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.rstrip().splitlines()
    assert len(lines) == 1 + len(files) and "big" not in out.stdout
    assert max(len(line.rstrip()) for line in lines) <= 100, out.stdout


def test_flow_story_finds_published_models_in_the_details(tmp_path: Path) -> None:
    """The flow's run story reads the split publish metrics (headline `models` is a count, the
    per-package list and the registry are in the details)."""
    from onceflow.orchestration.story import story_markdown

    pub = {**PUBLISH, "packages": [{"target": "ort-cpu", "model_id": "r28-abc",
                                    "status": "published"}]}  # fmt: skip
    m.write_metrics(tmp_path / "metrics" / "publish.json", m.publish_headline(pub), pub)
    story = story_markdown(tmp_path, ["ort-cpu"], "run")
    assert "1 new of 1 packages in `file:///x/registry`" in story
