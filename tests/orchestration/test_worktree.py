"""A run's workspace: its own revision, linked (never copied) credentials, and the workspaces of
dead runs removed by the next run, never one in use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from onceflow.orchestration.worktree import (
    close_workspace,
    open_workspace,
    remove_stale_workspaces,
)
from tests.flows.toy import commit, write_toy_repo

SECRET_LINE = "secret_access_key = sEcReT-test-key-do-not-leak-123"

_OPEN_AND_HANG = r"""
import sys, time
from onceflow.orchestration.worktree import open_workspace
ws = open_workspace(sys.argv[1], "HEAD", sys.argv[2], parent=sys.argv[3])
print(ws.path, flush=True)
time.sleep(600)
"""


def _repo(tmp_path: Path) -> Path:
    repo = write_toy_repo(tmp_path / "repo", {"ort-cpu": {}})
    local = repo / ".dvc" / "config.local"
    local.write_text(f"['remote \"s3\"']\n    url = s3://onceflow-test/x\n    {SECRET_LINE}\n")
    return repo


def _hold_in_subprocess(repo: Path, cache: Path, parent: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _OPEN_AND_HANG, str(repo), str(cache), str(parent)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _secret_copies(root: Path) -> list[Path]:
    """Regular files (not links) under ``root`` that hold the secret."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            if not p.is_symlink() and p.is_file() and SECRET_LINE in p.read_text(errors="ignore"):
                found.append(p)
    return found


def test_workspace_links_credentials_and_shares_the_cache(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    cache = tmp_path / "cache"
    ws = open_workspace(repo, "HEAD", str(cache), parent=str(tmp_path / "runs"))
    local = ws.path / ".dvc" / "config.local"
    assert local.is_symlink() and local.resolve() == (repo / ".dvc" / "config.local").resolve()
    assert (ws.path / ".dvc" / "cache").resolve() == cache.resolve()
    assert _secret_copies(tmp_path / "runs") == []
    from dvc.repo import Repo

    with Repo(str(ws.path)) as r:  # DVC reads the linked config and uses the shared cache
        assert r.config["remote"]["s3"]["secret_access_key"].startswith("sEcReT")
        assert Path(r.cache.local_cache_dir).resolve() == cache.resolve()
    close_workspace(ws)
    assert not ws.path.exists() and list((tmp_path / "runs").iterdir()) == []
    assert (repo / ".dvc" / "config.local").read_text().strip().endswith("123")  # untouched


def test_dead_runs_workspaces_are_removed_live_ones_never(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    cache, parent = tmp_path / "cache", tmp_path / "runs"
    dead, dead_ws = _hold_in_subprocess(repo, cache, parent)
    live, live_ws = _hold_in_subprocess(repo, cache, parent)
    try:
        dead.send_signal(signal.SIGKILL)  # a run killed mid-way leaves its workspace behind
        dead.wait(30)
        assert dead_ws.is_dir() and live_ws.is_dir()
        worktrees = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True,
                                   text=True, check=True).stdout  # fmt: skip
        assert str(dead_ws) in worktrees
        orphan = parent / "onceflow-run-orphan.lock"  # its workspace is already gone
        orphan.write_text("{}")
        # The next run's start removes the dead one, and git's record of it; the live run's
        # workspace is untouched.
        ws = open_workspace(repo, "HEAD", str(cache), parent=str(parent))
        assert not orphan.exists()
        assert not dead_ws.exists() and live_ws.is_dir() and (live_ws / "dvc.yaml").is_file()
        worktrees = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True,
                                   text=True, check=True).stdout  # fmt: skip
        assert str(dead_ws) not in worktrees and str(live_ws) in worktrees
        assert remove_stale_workspaces(parent) == []  # both others are alive
        close_workspace(ws)
    finally:
        live.kill()
        live.wait(30)
    assert remove_stale_workspaces(parent) == [live_ws]
    assert _secret_copies(tmp_path) == [repo / ".dvc" / "config.local"]


def test_workspace_holds_the_revision_not_the_checkouts_edits(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (repo / "toy_stage.py").write_text((repo / "toy_stage.py").read_text() + "\n# edited\n")
    ws = open_workspace(repo, "HEAD", str(tmp_path / "cache"), parent=str(tmp_path / "runs"))
    try:
        assert "# edited" not in (ws.path / "toy_stage.py").read_text()
    finally:
        close_workspace(ws)
    commit(repo, "edit")
    ws = open_workspace(repo, "HEAD", str(tmp_path / "cache"), parent=str(tmp_path / "runs"))
    try:
        assert "# edited" in (ws.path / "toy_stage.py").read_text()
    finally:
        close_workspace(ws)
