"""train_supernet(only_arch=...) trains one subnet alone; the weight-sharing benchmark runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from onceflow.config import PhaseConfig, TrainConfig
from onceflow.data.prepared import load_prepared
from onceflow.supernet import Supernet, save_supernet
from onceflow.train.loop import train_supernet
from tests.conftest import REPO_ROOT, tiny_supernet_config, tool_env, write_prepared

TRAIN = TrainConfig(
    phases=[PhaseConfig(name="full", epochs=1, lr=0.05)],
    batch_size=40,
    epoch_eval_images=0,
    bn_calib_images=40,
    eval_batch_size=100,
)


def test_only_arch_trains_that_subnet_and_nothing_else(tmp_path: Path, tiny_space) -> None:
    data = load_prepared(write_prepared(tmp_path / "d", n_per_class=8))
    arch = tiny_space.min_arch()
    torch.manual_seed(0)
    before = Supernet(tiny_space).state_dict()
    out = train_supernet(data, tiny_space, TRAIN, seed=0, only_arch=arch, progress=False)
    after = out.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # The min arch skips each stage's trailing blocks: those are never active, never trained.
    skipped = set(range(tiny_space.n_blocks)) - set(tiny_space.active_blocks(arch))
    inactive = [k for k in before if k.startswith("blocks.") and int(k.split(".")[1]) in skipped]
    assert changed and inactive and not changed & set(inactive)
    assert out.completed and out.epochs == 1.0


def test_bench_prints_gaps_and_cost_ratio(tmp_path: Path, tiny_space) -> None:
    params = {
        "base": {"threads": 1},
        "supernet": tiny_supernet_config().model_dump(mode="json"),
        "train": TRAIN.model_dump(mode="json")
        | {"phases": [{"name": "f", "epochs": 0.5, "lr": 0.05}]},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_prepared(tmp_path / "data", n_per_class=8)
    save_supernet(Supernet(tiny_space), tmp_path / "sn")
    (tmp_path / "m.json").write_text(json.dumps({"train_seconds": 10.0}))
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_weight_sharing.py"),
         "--params", str(tmp_path / "params.yaml"), "--supernet", str(tmp_path / "sn"),
         "--data", str(tmp_path / "data"), "--selection", str(tmp_path / "none.json"),
         "--supernet-metrics", str(tmp_path / "m.json")],
        capture_output=True, text=True, env=tool_env(), check=True, cwd=REPO_ROOT,
    )  # fmt: skip
    out = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    assert [r["picked_from"] for r in out["archs"]] == ["min", "mid", "max"]
    assert out["supernet_train_seconds"] == 10.0 and out["cost_ratio"] > 0
    n_test = 20  # write_prepared(n_per_class=8): 2 test images per class
    for r in out["archs"]:  # accuracies over 20 images: multiples of 1/20, within [0, 1]
        for acc in (r["alone_test_acc"], r["supernet_test_acc"]):
            assert 0 <= round(acc * n_test) <= n_test and acc * n_test == pytest.approx(
                round(acc * n_test)
            )
        assert set(r) >= {"gap_pp", "alone_train_seconds", "arch"}


def test_gap_and_cost_ratio_of_known_accuracies() -> None:
    """The summary on hand-picked numbers: gaps 5.0, -2.0 and 0.0 pp, mean 1.0; 10 s of
    supernet against 40 s of lone runs is a cost ratio of 0.25."""
    bench = _bench_module()
    rows = [
        {"supernet_test_acc": 0.90, "alone_test_acc": 0.85},
        {"supernet_test_acc": 0.80, "alone_test_acc": 0.82},
        {"supernet_test_acc": 0.70, "alone_test_acc": 0.70},
    ]
    out = bench.summarize(rows, 10.0, 40.0)
    assert [r["gap_pp"] for r in out["archs"]] == [5.0, -2.0, 0.0]
    assert (out["mean_gap_pp"], out["cost_ratio"], out["alone_train_seconds_sum"]) == (
        1.0, 0.25, 40.0,
    )  # fmt: skip
    assert bench.summarize(rows, None, 40.0)["cost_ratio"] is None


def _bench_module():  # noqa: ANN202 - the benchmark script, imported by path
    import importlib.util

    path = REPO_ROOT / "benchmarks" / "bench_weight_sharing.py"
    spec = importlib.util.spec_from_file_location("bench_weight_sharing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
