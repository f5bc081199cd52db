"""The train_supernet stage: in process, under torchrun (2 gloo ranks), and via `dvc repro`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from onceflow import stage
from onceflow.supernet import load_supernet
from stages import train_supernet
from tests.conftest import REPO_ROOT, copy_repo, run_dvc, tool_env, write_prepared
from tests.supernet.helpers import TINY_SPACE
from tests.train.helpers import TINY_TRAIN

TINY_PARAMS = {
    "base": {"seed": 0, "threads": 1, "device": "cpu"},
    "supernet": TINY_SPACE,
    "train": dict(TINY_TRAIN, phases=[{"name": "all", "epochs": 1, "lr": 0.1}]),
}
METRIC_KEYS = {"val_acc_max", "val_acc_min", "val_acc_mid", "train_seconds", "epochs"}


def _argv(root: Path, params: Path, data: Path) -> list[str]:
    return ["--params", str(params), "--data", str(data), "--out", str(root / "models/supernet"),
            "--metrics", str(root / "metrics/supernet.json"),
            "--details", str(root / "metrics/supernet.details.json"), "--live", str(root / "live"),
            "--checkpoints", str(root / "ckpt")]  # fmt: skip


def _check_outputs(root: Path) -> dict:
    metrics = json.loads((root / "metrics/supernet.details.json").read_text())
    headline = json.loads((root / "metrics/supernet.json").read_text())
    assert headline == {"top1": round(metrics["val_acc_max"], 4)}
    assert metrics.keys() >= METRIC_KEYS
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("val_acc_max", "val_acc_min", "val_acc_mid"))
    net = load_supernet(root / "models/supernet")
    assert net.space.n_blocks == 4
    return metrics


def test_stage_in_process_writes_outputs_and_reruns_from_checkpoint(tmp_path, tiny_prepared):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    assert stage.run(train_supernet.main, _argv(tmp_path, params, tiny_prepared)) == 0
    metrics = _check_outputs(tmp_path)
    assert metrics["epochs"] == 1.0
    assert (tmp_path / "live/plots/metrics/train/train_loss_max.tsv").is_file()
    assert (tmp_path / "live/plots/images/training_curves.png").read_bytes()[:4] == b"\x89PNG"
    # a rerun finds the finished run's checkpoint: no training, same weights
    (tmp_path / "models").rename(tmp_path / "models_first")
    assert stage.run(train_supernet.main, _argv(tmp_path, params, tiny_prepared)) == 0
    again = json.loads((tmp_path / "metrics/supernet.details.json").read_text())
    assert again["val_acc_max"] == metrics["val_acc_max"]


def test_stage_bad_params_exit_2(tmp_path, tiny_prepared):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"supernet": {"kernels": [3, 4]}}))
    assert stage.run(train_supernet.main, _argv(tmp_path, params, tiny_prepared)) == 2
    assert not (tmp_path / "models").exists()


@pytest.mark.slow(seconds=51)  # about the module's test time on CI
def test_stage_launches_two_local_ranks(tmp_path, tiny_prepared, caplog):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "processes": 2}})
    )
    with caplog.at_level(logging.INFO):
        assert stage.run(train_supernet.main, _argv(tmp_path, params, tiny_prepared)) == 0
    assert "launching 2 local ranks" in caplog.text
    _check_outputs(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "processes": 2,
                                                            "batch_size": 1}}))  # fmt: skip
    assert stage.run(train_supernet.main, _argv(tmp_path / "b", bad, tiny_prepared)) == 2


@pytest.mark.slow
def test_torchrun_two_gloo_ranks(tmp_path, tiny_prepared):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(TINY_PARAMS))
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "stages.train_supernet",
           *_argv(tmp_path, params, tiny_prepared)]  # fmt: skip
    env = tool_env(OMP_NUM_THREADS="1", ONCEFLOW_LOG_LEVEL="INFO")
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1/2 joined (gloo)" in proc.stderr
    assert "parameters in sync across 2 ranks" in proc.stderr  # checked on both ranks
    _check_outputs(tmp_path)


@pytest.mark.slow
def test_dvc_repro_train_supernet(tmp_path, host_cache):
    repo = copy_repo(tmp_path / "repo", TINY_PARAMS)
    write_prepared(repo / "data" / "prepared", n_per_class=8)
    run_dvc(repo, "repro", "--single-item", "train_supernet")
    _check_outputs(repo)
    # Checkpoints live in the machine's onceflow cache, not in the checkout...
    assert list((host_cache / "checkpoints" / "supernet").glob("*/ckpt-*.pt"))  # per fingerprint
    assert not (repo / "checkpoints").exists()
    again = run_dvc(repo, "repro", "--single-item", "train_supernet")
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    # ... so another workspace of the same run (a flow's fresh worktree) resumes it instead of
    # training again; other data would not.
    other = copy_repo(tmp_path / "workspace", TINY_PARAMS)
    write_prepared(other / "data" / "prepared", n_per_class=8)
    resumed = run_dvc(other, "repro", "--single-item", "train_supernet", ONCEFLOW_LOG_LEVEL="INFO")
    assert "resumed from" in resumed.stderr + resumed.stdout
    assert _check_outputs(other)["val_acc_max"] == _check_outputs(repo)["val_acc_max"]
