"""train_supernet(only_arch=...) trains one subnet alone; the weight-sharing benchmark
(benchmarks/bench_weight_sharing.py) runs on a tiny profile and its statistics are right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats

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


def _run_bench(
    tmp_path: Path, *args: str, check: bool = True, train: dict | None = None
) -> subprocess.CompletedProcess:
    params = {
        "base": {"threads": 1},
        "supernet": tiny_supernet_config().model_dump(mode="json"),
        "train": TRAIN.model_dump(mode="json")
        | {"phases": [{"name": "f", "epochs": 1, "lr": 0.1}], "n_random": 0}
        | (train or {}),
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    if not (tmp_path / "data").is_dir():
        write_prepared(tmp_path / "data", n_per_class=8)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_weight_sharing.py"),
         "--params", str(tmp_path / "params.yaml"), "--data", str(tmp_path / "data"),
         "--selection", str(tmp_path / "none.json"), *args],
        capture_output=True, text=True, env=tool_env(), check=check, cwd=REPO_ROOT,
    )  # fmt: skip


def test_bench_prints_gaps_with_a_t_interval_and_cost_ratio(tmp_path: Path) -> None:
    """The tiny profile end to end: 2 lone seeds per arch against 2 supernets trained in the
    same invocation; every key, per-arch spread, a real interval around the mean gap (checked
    against the t quantile from the printed gaps) and the groups min/mid/max."""
    proc = _run_bench(tmp_path, "--seeds", "2", "--supernet-seeds", "2", "--archs", "min,mid,max")
    out = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    assert {"mean_gap_pp", "gap_ci95_pp", "gap_ci_method", "groups", "cost_ratio", "archs",
            "alone_train_seconds_sum", "supernet_train_seconds", "seeds"} <= set(out)  # fmt: skip
    assert [r["group"] for r in out["archs"]] == ["min", "mid", "max"][: len(out["archs"])]
    n_test = 20  # write_prepared(n_per_class=8): 2 test images per class
    gaps = []
    for r in out["archs"]:
        assert len(r["alone_test_acc"]) == 2 and len(r["supernet_test_acc"]) == 2
        for acc in r["alone_test_acc"] + r["supernet_test_acc"]:  # multiples of 1/20
            assert 0 <= acc <= 1 and acc * n_test == pytest.approx(round(acc * n_test))
        want = [
            100 * (s - a) for s, a in zip(r["supernet_test_acc"], r["alone_test_acc"], strict=True)
        ]
        assert r["gaps_pp"] == pytest.approx(want, abs=1e-3)
        assert r["gap_sd_pp"] == pytest.approx(np.std(want, ddof=1), abs=2e-3)
        gaps += want
    lo, hi = out["gap_ci95_pp"]
    half = stats.t.ppf(0.975, len(gaps) - 1) * np.std(gaps, ddof=1) / np.sqrt(len(gaps))
    assert out["mean_gap_pp"] == pytest.approx(np.mean(gaps), abs=1e-3)
    assert (lo, hi) == pytest.approx((np.mean(gaps) - half, np.mean(gaps) + half), abs=2e-3)
    assert np.isfinite([lo, hi]).all() and lo <= out["mean_gap_pp"] <= hi
    assert len(set(gaps)) > 1 and lo < hi  # a real interval: the runs differ
    assert out["supernet_train_seconds"] > 0 and out["cost_ratio"] > 0
    assert set(out["groups"]) == {r["group"] for r in out["archs"]}


def test_bench_loads_a_supernet_and_its_metrics(tmp_path: Path, tiny_space) -> None:
    """Without --supernet-seeds the supernet is loaded (the default run's) and its seconds
    read from the metrics; the cost ratio is against one seed's lone runs."""
    save_supernet(Supernet(tiny_space), tmp_path / "sn")
    (tmp_path / "m.json").write_text(json.dumps({"train_seconds": 10.0}))
    proc = _run_bench(
        tmp_path, "--supernet", str(tmp_path / "sn"), "--supernet-metrics",
        str(tmp_path / "m.json"), "--archs", "min,max", "--epochs-scale", "0.5",
    )  # fmt: skip
    out = json.loads(proc.stdout[proc.stdout.index("{\n") :])
    assert out["supernet_train_seconds"] == 10.0 and out["supernets"] == str(tmp_path / "sn")
    assert out["cost_ratio"] == pytest.approx(10.0 / out["alone_train_seconds_per_seed"], 1e-2)
    assert all(len(r["supernet_test_acc"]) == 1 and len(r["gaps_pp"]) == 2 for r in out["archs"])


def test_bench_lone_cache_reuses_runs_a_sandwich_option_cannot_change(tmp_path: Path) -> None:
    """--lone-cache: a second recipe that differs only in sandwich options (n_random, distill)
    takes every lone run from the cache (same accuracies and seconds, nothing added); one that
    changes what a lone run trains with (label smoothing) trains them again."""
    cache = tmp_path / "lone.json"
    args = ("--supernet-seeds", "1", "--archs", "min,max", "--lone-cache", str(cache))

    def lone(proc: subprocess.CompletedProcess) -> list:
        out = json.loads(proc.stdout[proc.stdout.index("{\n") :])
        return [(r["alone_test_acc"], r["alone_train_seconds"]) for r in out["archs"]]

    first = lone(_run_bench(tmp_path, *args))
    entries = json.loads(cache.read_text())
    assert len(entries) == 4  # 2 archs x 2 seeds
    again = lone(_run_bench(tmp_path, *args, train={"n_random": 1, "distill": "none"}))
    assert again == first and json.loads(cache.read_text()) == entries
    _run_bench(tmp_path, *args, train={"label_smoothing": 0.2})
    assert len(json.loads(cache.read_text())) == 8


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--seeds", "1"], "--seeds 1"), (["--archs", "min,huge"], "--archs 'min,huge'")],
)
def test_bench_bad_arguments_are_one_line_and_exit_2(tmp_path: Path, args, needle) -> None:  # noqa: ANN001
    proc = _run_bench(tmp_path, *args, check=False)
    assert proc.returncode == 2 and needle in proc.stderr and not proc.stdout


def test_gap_and_cost_ratio_of_known_accuracies() -> None:
    """The summary on hand-picked numbers: two archs x two seeds against one supernet, gaps
    5, 3 and -2, -4 pp: mean 0.5, sd of the four 4.203, t(0.975, 3) = 3.182 so the interval is
    0.5 -/+ 6.688; 10 s of supernet against 40 s of lone runs per seed: cost ratio 0.25."""
    bench = _bench_module()
    rows = [
        {"group": "min", "supernet_test_acc": [0.90], "alone_test_acc": [0.85, 0.87]},
        {"group": "mid", "supernet_test_acc": [0.80], "alone_test_acc": [0.82, 0.84]},
    ]
    out = bench.summarize(rows, 10.0, [38.0, 42.0])
    assert [r["gaps_pp"] for r in out["archs"]] == [[5.0, 3.0], [-2.0, -4.0]]
    assert [r["gap_pp"] for r in out["archs"]] == [4.0, -3.0]
    assert [r["gap_sd_pp"] for r in out["archs"]] == [1.414, 1.414]
    assert out["mean_gap_pp"] == 0.5 and out["gap_ci95_pp"] == [-6.188, 7.188]
    assert (out["cost_ratio"], out["alone_train_seconds_sum"]) == (0.25, 80.0)
    assert out["groups"]["min"] == {"mean_gap_pp": 4.0, "gap_ci95_pp": [-8.706, 16.706], "n": 2}
    assert bench.summarize(rows, None, [40.0])["cost_ratio"] is None
    # two supernets: lone seed i against supernet i
    two = [{"group": "max", "supernet_test_acc": [0.9, 0.8], "alone_test_acc": [0.85, 0.85]}]
    assert bench.summarize(two, 1.0, [1.0])["archs"][0]["gaps_pp"] == [5.0, -5.0]


def test_bench_archs_are_the_picks_then_min_and_mid(tmp_path: Path, default_space) -> None:
    """With a selection the rows are its three picks (lowest, middle, highest budget), then the
    space's min and mid archs; without one, the max arch takes the picks' place."""
    bench = _bench_module()
    rng = np.random.default_rng(0)
    picks = [default_space.sample(rng) for _ in range(3)]
    sel = tmp_path / "selected.json"
    sel.write_text(
        json.dumps({"selected": [{"budget_ms": i, "arch": str(a)} for i, a in enumerate(picks)]})
    )
    rows = bench.pick_archs(default_space, sel, ["picks", "min", "mid"])
    assert [r["group"] for r in rows] == ["picks"] * 3 + ["min", "mid"]
    want = [*picks, default_space.min_arch(), default_space.mid_arch()]
    assert [r["arch"] for r in rows] == [str(default_space.canonical(a)) for a in want]
    rows = bench.pick_archs(default_space, tmp_path / "none.json", ["picks", "min", "mid"])
    assert [r["group"] for r in rows] == ["max", "min", "mid"]


def _bench_module():  # noqa: ANN202 - the benchmark script, imported by path
    import importlib.util

    path = REPO_ROOT / "benchmarks" / "bench_weight_sharing.py"
    spec = importlib.util.spec_from_file_location("bench_weight_sharing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
