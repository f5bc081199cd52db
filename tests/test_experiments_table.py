"""`onceflow exps`: `dvc exp show --json` on its side, one row per headline, narrow.

The rows of a real sweep are checked in tests/test_experiments.py (queued experiments of the
real pipeline); here the layout, on DVC's JSON shape, with targets added and details present.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from onceflow.experiments import experiments_table, format_value, runs_from_show
from tests.conftest import tool_env

TARGETS = ("ort-cpu", "ort-cpu-int8")


def _data(n_samples: int, tau: float, targets: tuple[str, ...] = TARGETS) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "metrics/supernet.json": {"data": {"top1": 0.2533}},
        "metrics/supernet.details.json": {"data": {"val_acc_max": 0.2533, "train_seconds": 9.5}},
        "metrics/predictor.json": {"data": {"kendall_tau": tau, "ceiling": tau / 2}},
        "metrics/predictor.details.json": {"data": {"n_samples": n_samples, "kendall_tau": tau}},
    }
    for i, t in enumerate(targets):
        metrics[f"metrics/search/{t}.json"] = {"data": {"top1": tau / 3 + i, "models": 1}}
        metrics[f"metrics/package/{t}.json"] = {"data": {"top1": 0.3, "passed": True}}
        metrics[f"metrics/package/{t}.details.json"] = {"data": {"target": t, "n": n_samples}}
    params = {"data": {"max_train": 1000}, "predictor": {"n_samples": n_samples, "k_folds": 3}}
    return {
        "rev": "x",
        "params": {"params.yaml": {"data": params}},
        "metrics": metrics,
        "deps": {"models/supernet": {"hash": "abc"}},
    }


def _show(sizes: dict[str, int], targets: tuple[str, ...] = TARGETS) -> list[dict[str, Any]]:
    exps = [
        {"revs": [{"rev": f"{i:07d}aaaa", "name": name, "data": _data(n, 0.1 * i, targets)}],
         "name": name, "executor": None}
        for i, (name, n) in enumerate(sizes.items(), start=1)
    ]  # fmt: skip
    exps.append({"revs": [{"rev": "f" * 40, "name": "later", "data": None}], "name": "later",
                 "executor": {"state": "queued"}})  # fmt: skip
    exps.append({"revs": [{"rev": "e" * 40, "name": "now", "data": _data(99, 0.5, targets)}],
                 "name": "now", "executor": {"state": "running"}})  # fmt: skip
    return [
        {"rev": "workspace", "name": None, "data": _data(16, 0.9, targets)},
        {"rev": "c0ffee" * 6 + "abcd", "name": "master", "data": _data(16, 0.9, targets),
         "experiments": exps},
    ]  # fmt: skip


def test_one_row_per_changed_headline_one_column_per_run() -> None:
    lines, pending = experiments_table(_show({"samples-14": 14, "samples-24": 24}))
    assert pending == ["later (queued)", "now (running)"]  # no column: results incomplete
    head, revs = lines[0].split(), lines[1].split()
    assert head == ["master", "samples-14", "samples-24"]  # the workspace repeats master
    assert revs == ["c0ffeec", "0000001", "0000002"]
    text = "\n".join(lines)
    assert "params\n  predictor.n_samples" in text and "k_folds" not in text  # changed only
    assert "predictor\n  kendall_tau" in text and "search/ort-cpu-int8\n  top1" in text
    assert "supernet" not in text and "package/" not in text  # same in every run
    assert "details" not in text and "val_acc_max" not in text and "target" not in text
    row = next(ln for ln in lines if ln.strip().startswith("predictor.n_samples")).split()
    assert row == ["predictor.n_samples", "16", "14", "24"]
    every = "\n".join(experiments_table(_show({"a": 14}), all_headlines=True)[0])
    assert "supernet\n  top1" in every and "package/ort-cpu\n  top1" in every and "passed" in every


def test_width_grows_with_runs_not_with_targets() -> None:
    sizes = {"samples-14": 14, "samples-24": 24, "samples-48": 48}
    two = experiments_table(_show(sizes))[0]
    many = tuple(f"device-{i}-int8" for i in range(12))
    twelve = experiments_table(_show(sizes, many))[0]
    assert max(map(len, twelve)) == max(map(len, two)) <= 80
    assert len(twelve) > len(two)


def test_uncommitted_results_show_as_the_workspace_column() -> None:
    show = _show({"samples-14": 14})
    show[0]["data"] = _data(20, 0.5)
    runs, _ = runs_from_show(show)
    assert [r.name for r in runs] == ["workspace", "master", "samples-14"]


def test_cells_read_like_dvc() -> None:
    assert [format_value(v) for v in (None, True, 3, 0.123456789, 1e-7, [1, 2])] == [
        "-", "true", "3", "0.12346", "1e-07", "[1,2]"
    ]  # fmt: skip


def test_the_command_outside_a_dvc_project_is_one_line(tmp_path: Path) -> None:
    res = subprocess.run(
        ["onceflow", "exps", "--root", str(tmp_path)],
        capture_output=True, text=True, env=tool_env(), cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "dvc exp show --json" in res.stderr
