"""The prepare stage: outputs on good data; clear errors and nothing half-written on bad data."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from onceflow import stage
from onceflow.data.prepared import load_prepared
from stages import prepare
from tests.conftest import copy_repo, run_dvc
from tests.data.conftest import idx_bytes, write_idx_dataset

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _run(tmp_path: Path, data: dict, extra: dict | None = None) -> tuple[int, Path]:
    params = {"base": {"seed": 0}, "data": {"source": "fashion-mnist", "val_fraction": 0.2, **data}}
    params.update(extra or {})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    argv = ["--params", str(tmp_path / "params.yaml"), "--out", str(out / "prepared"),
            "--report", str(out / "report.json"), "--summary", str(out / "report.md"),
            "--metrics", str(out / "metrics.json"),
            "--details", str(out / "metrics.details.json")]  # fmt: skip
    return stage.run(prepare.main, argv), out


def test_prepare_writes_outputs(tmp_path: Path):
    src = write_idx_dataset(tmp_path / "src")
    code, out = _run(tmp_path, {"path": str(src)})
    assert code == 0
    assert json.loads((out / "metrics.json").read_text()) == {"passed": True, "images": 250}
    assert json.loads((out / "metrics.details.json").read_text()) == {
        "n_train": 160,
        "n_val": 40,
        "n_test": 50,
        "n_classes": 10,
        "n_train_val_duplicates": 0,
        "validation_success": True,
    }
    data = load_prepared(out / "prepared")
    assert data.train.images.shape == (160, 28, 28, 1)
    assert np.bincount(data.val.labels).tolist() == [4] * 10
    assert 0 < data.meta.mean[0] < 1 and data.meta.classes[9] == "Ankle boot"
    assert json.loads((out / "report.json").read_text())["success"] is True


def test_gate_failure_exits_nonzero_and_writes_no_prepared_data(tmp_path: Path, caplog):
    src = write_idx_dataset(tmp_path / "src")
    # Make class 7 vanish from the test split: the gate must stop the stage.
    labels = np.frombuffer(
        gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:], np.uint8
    ).copy()
    labels[labels == 7] = 6
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    code, out = _run(tmp_path, {"path": str(src)})
    assert code == 2
    assert not (out / "prepared").exists() and not (out / "metrics.json").exists()
    assert "every_class_present: missing test:7" in caplog.text
    report = json.loads((out / "report.json").read_text())
    assert report["success"] is False
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_dir", "does not exist"),
        ("truncated", "truncated"),
        ("bad_magic", "wrong IDX magic"),
        ("short_labels", "labels but train-images-idx3-ubyte.gz holds"),
        ("bad_labels", "outside the 10 classes"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, caplog, breakage: str, message: str):
    src = write_idx_dataset(tmp_path / "src")
    img, lbl = src / "train-images-idx3-ubyte.gz", src / "train-labels-idx1-ubyte.gz"
    if breakage == "missing_dir":
        src = tmp_path / "nowhere"
    elif breakage == "truncated":
        img.write_bytes(gzip.compress(gzip.decompress(img.read_bytes())[:5000]))
    elif breakage == "bad_magic":
        img.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + gzip.decompress(img.read_bytes())[4:]))
    elif breakage == "short_labels":
        lbl.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    elif breakage == "bad_labels":
        lbl.write_bytes(gzip.compress(idx_bytes(np.full(200, 10, np.uint8))))
    code, out = _run(tmp_path, {"path": str(src)})
    assert code == 2
    assert message in caplog.text
    assert not out.exists() or not (out / "prepared").exists()


def test_mistyped_params_key_exits_2(tmp_path: Path, caplog):
    src = write_idx_dataset(tmp_path / "src")
    code, out = _run(tmp_path, {"path": str(src), "val_fracion": 0.1})
    assert code == 2
    assert "data.val_fracion: unknown key" in caplog.text
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not FMNIST.is_dir(), reason="Fashion-MNIST not installed (make test installs it)"
)
def test_dvc_repro_prepare_on_fashion_mnist_subset(tmp_path: Path):
    repo = copy_repo(tmp_path, {"data": {"max_train": 2000, "max_test": 500}})
    run_dvc(repo, "repro", "prepare")
    headline = json.loads((repo / "metrics" / "data.json").read_text())
    assert headline == {"passed": True, "images": 2500}
    metrics = json.loads((repo / "metrics" / "data.details.json").read_text())
    assert metrics == {
        "n_train": 1800,
        "n_val": 200,
        "n_test": 500,
        "n_classes": 10,
        "n_train_val_duplicates": 0,
        "validation_success": True,
    }
    again = run_dvc(repo, "repro", "prepare")
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    assert "Running stage 'prepare'" not in again.stdout
