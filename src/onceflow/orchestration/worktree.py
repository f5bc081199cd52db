"""A flow run's own workspace: a fresh ``git worktree`` of the requested revision that shares the
project's DVC cache (and so its run cache).

Overrides are applied to the worktree's ``params.yaml``, never to the user's checkout; the
worktree's ``dvc.lock`` records what this run used. Results reach the shared cache and run cache
as DVC writes them, so a later run (or ``dvc repro`` in the checkout) with the same inputs restores
them instead of recomputing, and ``dvc push --run-cache`` carries them to other machines.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from onceflow.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    repo: Path  # the user's checkout (never written, but for git's worktree bookkeeping)
    path: Path  # this run's worktree
    commit: str  # the revision it holds


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{cwd}: `git {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve_commit(repo: str | os.PathLike[str], rev: str) -> str:
    """The commit ``rev`` names in ``repo`` (a git checkout of the project)."""
    repo = Path(repo)
    if not (repo / "dvc.yaml").is_file():
        raise ConfigError(
            f"{repo}: no dvc.yaml; pass the project checkout as `repo` (or run the worker there)"
        )
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except ConfigError:
        raise ConfigError(
            f"{repo}: revision {rev!r} not found; commit your changes (the flow runs a revision,"
            " not the working tree) or `git fetch` it on this machine"
        ) from None


def open_workspace(
    repo: str | os.PathLike[str], rev: str, cache_dir: str, parent: str | None = None
) -> Workspace:
    """Check out ``rev`` of ``repo`` into a fresh worktree under ``parent`` (default: the system
    temp dir) that uses ``cache_dir`` as its DVC cache and the checkout's local DVC config
    (remote credentials)."""
    repo = Path(repo).resolve()
    commit = resolve_commit(repo, rev)
    path = Path(tempfile.mkdtemp(prefix="onceflow-run-", dir=parent))
    _git(repo, "worktree", "add", "--detach", "--force", str(path), commit)
    local = repo / ".dvc" / "config.local"
    if local.is_file():
        shutil.copy2(local, path / ".dvc" / "config.local")
    from dvc.config import Config

    with Config(dvc_dir=str(path / ".dvc")).edit("local") as conf:
        conf["cache"]["dir"] = cache_dir
    log.info("workspace %s: %s at %s", path, repo, commit[:12])
    return Workspace(repo=repo, path=path, commit=commit)


def close_workspace(ws: Workspace) -> None:
    """Remove the worktree (its results are in the shared cache and run cache)."""
    try:
        _git(ws.repo, "worktree", "remove", "--force", str(ws.path))
    except ConfigError as err:
        log.warning("%s", err)
        shutil.rmtree(ws.path, ignore_errors=True)
        _git(ws.repo, "worktree", "prune")
