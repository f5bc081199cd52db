"""The lineage a package carries is DVC's own record of the run that built it.

A tiny copy of the project: upstream outputs are written directly (random supernet, synthetic
data, a selection; placeholders for the other upstream outs) and recorded in dvc.lock with
``dvc commit``; then the real ``package@ort-cpu`` stage runs under ``dvc repro``. ``onceflow
show`` must report exactly the md5s and params dvc.lock holds, and ``dvc repro`` at the
recorded commit with that lock must find nothing to do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from dvc.utils.serialize import load_yaml
from typer.testing import CliRunner

from onceflow.cli import app
from onceflow.config import parse_params
from onceflow.package.lineage import collect_lineage
from onceflow.supernet import SearchSpace, Supernet, save_supernet
from tests.conftest import copy_repo, run_dvc, write_prepared
from tests.package.conftest import TINY_SUPERNET

T = "ort-cpu"
TINY = {
    "base": {"threads": 1},
    "supernet": TINY_SUPERNET,
    "latency": {"protocol": {"warmup": 2, "repeats": 5}},
    "package": {"bn_calibration_images": 64, "batch_size": 64, "max_models": 1},
}


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _upstream_outputs(repo: Path) -> list[str]:
    """Write what package@ort-cpu reads, placeholders for the other upstream outs; the names
    of the upstream stages (from DVC's own graph)."""
    space = SearchSpace(parse_params(TINY).supernet, in_channels=1, n_classes=10, image_size=28)
    torch.manual_seed(0)
    save_supernet(Supernet(space), repo / "models" / "supernet")
    write_prepared(repo / "data" / "prepared", n_per_class=8)
    arch = space.sample(np.random.default_rng(1))
    sel = {"target": T, "selected": [{"budget_ms": 1.0, "arch": str(arch), "arch_json":
           arch.to_json(), "predicted_accuracy": 0.5, "predicted_latency_ms": 0.5}]}  # fmt: skip
    (repo / "search" / T).mkdir(parents=True)
    (repo / "search" / T / "selected.json").write_text(json.dumps(sel))

    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        graph = dvc.index.graph
        [pkg] = [s for s in graph if s.name == f"package@{T}"]
        upstream = [s for s in nx.dfs_postorder_nodes(graph, pkg) if s is not pkg]
        for stage in upstream:
            for out in stage.outs:
                path = Path(out.fs_path)
                if path.exists():
                    continue
                if path.suffix:  # a file out (metrics, plots, csv)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n" if path.suffix == ".json" else "placeholder\n")
                else:
                    path.mkdir(parents=True)
                    (path / "placeholder.txt").write_text(stage.name)
        return [s.name for s in upstream]


@pytest.mark.slow
def test_show_reports_the_dvc_lock_of_the_run_that_built_the_package(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "repo", TINY)
    stages = _upstream_outputs(repo)
    assert {"prepare", "train_supernet", f"latency_table@{T}", f"search@{T}"} <= set(stages)
    run_dvc(repo, "commit", "--force", *stages)  # record the upstream outs in dvc.lock
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "upstream recorded")
    built_at = _git(repo, "rev-parse", "HEAD")

    ran = run_dvc(repo, "repro", f"package@{T}")
    assert f"Running stage 'package@{T}'" in ran.stdout
    assert not any(f"Running stage '{s}'" in ran.stdout for s in stages)  # upstream was current
    _git(repo, "add", "dvc.lock")
    _git(repo, "commit", "-qm", "lock of the package run")
    assert _git(repo, "diff", "--name-only", built_at, "HEAD").split() == ["dvc.lock"]

    # dvc.lock read as YAML 1.2, as DVC writes it (PyYAML's 1.1 reads `4e-05` as a string)
    lock = load_yaml(repo / "dvc.lock")["stages"]
    [pkg] = [p.parent for p in (repo / "artifacts" / T).glob("*/manifest.json")]
    res = CliRunner().invoke(
        app, ["show", pkg.name, "--artifacts", str(repo / "artifacts"), "--json"]
    )
    assert res.exit_code == 0, res.output
    lineage = json.loads(res.output)["lineage"]

    assert lineage["git"]["commit"] == built_at
    roles = lineage["dvc_lock"]
    assert set(roles) == {"data", "supernet", "latency", "predictor", "selection"}
    for role, rec in roles.items():
        [out] = [o for o in lock[rec["stage"]]["outs"] if o["path"] == rec["path"]]
        assert rec["md5"] == out["md5"], role
        assert rec["matches_workspace"] is True, role
    # The model id was derived from those same hashes (DVC's, not a second hashing scheme).
    identity = json.loads((pkg / "manifest.json").read_text())["lineage"]["identity"]
    assert roles["data"]["md5"] in json.dumps(identity)
    assert roles["supernet"]["md5"] in json.dumps(identity)
    # Params of every upstream stage, exactly as dvc.lock records them.
    assert set(lineage["stages"]) == set(stages)
    for name, rec in lineage["stages"].items():
        assert rec["params"] == lock[name].get("params", {}), name
        assert rec["outs"] == {o["path"]: o["md5"] for o in lock[name]["outs"]}, name

    human = CliRunner().invoke(app, ["show", str(pkg)])
    assert human.exit_code == 0, human.output
    assert f"git commit {built_at} (clean)" in human.output
    for rec in roles.values():
        assert f"  {rec['md5']}  stage {rec['stage']}" in human.output
        assert f"  {rec['path']}  " in human.output
    assert "    supernet.kernels = [3, 5]" in human.output  # train_supernet's params

    # At the recorded commit with that lock, DVC has nothing to do.
    status = run_dvc(repo, "status", "--json", f"package@{T}")
    assert json.loads(status.stdout) == {}
    again = run_dvc(repo, "repro", f"package@{T}")
    assert "Running stage" not in again.stdout


def test_lineage_outside_a_dvc_repo_uses_dvc_hashing(tmp_path: Path) -> None:
    data = write_prepared(tmp_path / "prepared", n_per_class=2)
    lineage, hashes = collect_lineage({"data": str(data), "supernet": "missing"}, {}, tmp_path)
    rec = lineage["dvc_lock"]["data"]
    assert (rec["stage"], rec["md5"], rec["matches_workspace"]) == (None, None, None)
    assert hashes == {"data": rec["workspace_md5"]} and rec["workspace_md5"].endswith(".dir")
    assert lineage["stages"] == {}


def test_lineage_of_paths_inside_a_directory_out_is_dvcs_record(tmp_path: Path) -> None:
    """A file or folder inside a directory out: its md5 is the one DVC's recorded listing
    holds (no second hashing scheme), and a changed workspace says so."""
    repo = tmp_path / "r"
    (repo / "out" / "sub").mkdir(parents=True)
    _git(repo, "init", "-q")
    run_dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text("stages:\n  make:\n    cmd: 'true'\n    outs: [out]\n")
    (repo / "out" / "a.txt").write_text("a\n")
    (repo / "out" / "sub" / "b.txt").write_text("b\n")
    run_dvc(repo, "commit", "--force", "make")
    inputs = {"file": "out/a.txt", "folder": "out/sub", "whole": "out"}

    lineage, _ = collect_lineage(inputs, {}, repo)
    roles = lineage["dvc_lock"]
    for role, rec in roles.items():
        assert rec["stage"] == "make" and rec["matches_workspace"] is True, role
        assert rec["md5"] == rec["workspace_md5"], role
    lock = load_yaml(repo / "dvc.lock")["stages"]["make"]["outs"]
    assert roles["whole"]["md5"] == lock[0]["md5"]
    assert roles["file"]["md5"] == "60b725f10c9c85c70d97880dfe8191b3"  # md5 of "a\n"
    assert roles["folder"]["md5"].endswith(".dir")

    (repo / "out" / "sub" / "b.txt").write_text("changed\n")
    roles = collect_lineage(inputs, {}, repo)[0]["dvc_lock"]
    assert [roles[r]["matches_workspace"] for r in inputs] == [True, False, False]
