"""Per-target isolation, checked with the real `dvc status --json`: adding, editing or removing
target B leaves every stage of target A (and the shared stages) up to date.

The temp repo holds the project's real dvc.yaml and params.yaml (only `data.path` points at a
local placeholder); every out is a placeholder and `dvc commit -f` records a lock without
running anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_repo, run_dvc
from tests.test_dvc_deps import expand_stages

pytestmark = pytest.mark.slow

A = "ort-cpu"
B = "ort-cpu-b"


def _placeholder_outs(repo: Path) -> None:
    """Create every out / metric / plot of every stage (and deps inside outs, such as
    search/T/selected.json) as a small file or directory."""
    for _, stage in expand_stages(repo):
        for kind in ("outs", "metrics", "plots", "deps"):
            for entry in stage.get(kind, []):
                rel = next(iter(entry)) if isinstance(entry, dict) else entry
                path = repo / rel
                if path.exists():
                    continue
                if path.suffix:  # a file (json, png, csv, md)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}\n" if path.suffix == ".json" else "placeholder\n")
                else:  # a directory out
                    path.mkdir(parents=True)
                    (path / "placeholder.txt").write_text(rel)


def _edit_params(repo: Path, edit) -> None:  # noqa: ANN001 - a callable on the parsed dict
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _changed(repo: Path) -> set[str]:
    """Names of the stages `dvc status --json` reports."""
    out = run_dvc(repo, "status", "--json").stdout
    return {name.split(":")[-1] for name in json.loads(out or "{}")}


def _of(target: str) -> set[str]:
    return {f"{s}@{target}" for s in ("device_results", "latency_table", "search", "package")}


def placeholder_repo(tmp_path: Path) -> Path:
    """A copy of the repo whose data path is a placeholder file and whose every out is a
    placeholder (not yet committed to DVC): ``dvc status`` then shows what an edit reruns."""
    repo = copy_repo(tmp_path / "repo")
    raw = repo / "raw"
    raw.mkdir()
    (raw / "images.idx").write_text("placeholder dataset\n")
    _edit_params(repo, lambda p: p["data"].update(path="raw"))
    _placeholder_outs(repo)
    return repo


# Stages that compare or show every target: a new target is one of their inputs by design.
CROSS_TARGET = {"specialize_report", "report"}


def test_adding_editing_removing_a_target_leaves_the_others_clean(tmp_path: Path) -> None:
    repo = placeholder_repo(tmp_path)
    targets = list(yaml.safe_load((repo / "params.yaml").read_text())["latency"]["targets"])
    assert A in targets and B not in targets
    run_dvc(repo, "commit", "-f")
    assert _changed(repo) == set()

    # add B: only B's stages are new; A's and the shared stages stay clean
    def add_b(p: dict) -> None:
        p["latency"]["targets"][B] = dict(p["latency"]["targets"][A], threads=1)

    _edit_params(repo, add_b)
    assert _changed(repo) - CROSS_TARGET == _of(B)
    _placeholder_outs(repo)
    run_dvc(repo, "commit", "-f")
    assert _changed(repo) == set()

    # edit B (its budgets): B reruns, A does not
    def edit_b(p: dict) -> None:
        p["latency"]["targets"][B]["budgets"] = {"unit": "ms", "values": [1.0]}

    _edit_params(repo, edit_b)
    assert _changed(repo) - CROSS_TARGET == _of(B)  # B's stages depend on B's whole entry
    run_dvc(repo, "commit", "-f")

    # remove B: A is still clean
    _edit_params(repo, lambda p: p["latency"]["targets"].pop(B))
    assert not _changed(repo) & (_of(A) | {"prepare", "train_supernet", "predictor"})

    # ...and a shared section still reaches every target (the test can fail)
    _edit_params(repo, lambda p: p["latency"]["protocol"].update(repeats=99))
    assert _changed(repo) >= {f"latency_table@{A}", f"package@{A}"}
