"""A flow run's own workspace: a fresh ``git worktree`` of the requested revision that shares the
project's DVC cache (and so its run cache).

Overrides are applied to the worktree's ``params.yaml``, never to the user's checkout; the
worktree's ``dvc.lock`` records what this run used. Results reach the shared cache and run cache
as DVC writes them, so a later run (or ``dvc repro`` in the checkout) with the same inputs restores
them instead of recomputing, and ``dvc push --run-cache`` carries them to other machines.

Workspaces live under this machine's onceflow cache (:func:`onceflow.hostcache.workspaces_dir`).
Each is held by an ``flock`` on ``<workspace>.lock`` for as long as its run lives; the kernel
drops the lock when the run dies, however it dies, so the next run's :func:`open_workspace`
removes the workspaces of dead runs (never one in use). The checkout's ``.dvc/config.local``
(remote credentials) is linked into a workspace, never copied, so no workspace holds a copy of
credentials, not even one left behind by a killed run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from onceflow import hostcache
from onceflow.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "onceflow-run-"
# A workspace folder without its lock file (the run died between creating the two) is stale
# once it is this old.
UNLOCKED_GRACE_S = 600.0
_HELD: dict[Path, int] = {}  # workspace -> fd of its held lock file (this process's runs)


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


def _lock_file(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _hold(path: Path, repo: Path, commit: str) -> None:
    """Take the workspace's lock for this process's lifetime (or until :func:`close_workspace`)."""
    fd = os.open(_lock_file(path), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: nobody else holds it
    info = {"repo": str(repo), "commit": commit, "pid": os.getpid(), "started": time.time()}
    os.write(fd, json.dumps(info).encode())
    _HELD[path] = fd


def _release(path: Path) -> None:
    fd = _HELD.pop(path, None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            _lock_file(path).unlink()
        os.close(fd)


def _discard(path: Path, repo: Path | None) -> None:
    """Remove a workspace folder and git's record of it (in ``repo``, when known)."""
    if repo is not None and (repo / ".git").exists():
        with contextlib.suppress(ConfigError):
            _git(repo, "worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    if repo is not None and (repo / ".git").exists():
        with contextlib.suppress(ConfigError):
            _git(repo, "worktree", "prune")


def remove_stale_workspaces(parent: Path | None = None) -> list[Path]:
    """Remove the workspaces under ``parent`` whose runs are dead: their lock is free (its
    holder exited or was killed), or they have no lock file and are older than
    :data:`UNLOCKED_GRACE_S`. A workspace whose run still holds its lock is never touched."""
    parent = parent or hostcache.workspaces_dir()
    removed = []
    for lock in parent.glob(f"{PREFIX}*.lock"):  # a lock whose workspace is already gone
        if not lock.with_suffix("").exists() and lock.with_suffix("") not in _HELD:
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                lock.unlink(missing_ok=True)
            except BlockingIOError:
                pass
            finally:
                os.close(fd)
    for path in sorted(parent.glob(f"{PREFIX}*")):
        if not path.is_dir() or path in _HELD:
            continue
        lock = _lock_file(path)
        if not lock.exists():
            if time.time() - path.stat().st_mtime > UNLOCKED_GRACE_S:
                _discard(path, None)
                removed.append(path)
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive
            try:
                repo = Path(json.loads(os.pread(fd, 65536, 0) or b"{}")["repo"])
            except (ValueError, KeyError, TypeError):
                repo = None
            _discard(path, repo)
            lock.unlink(missing_ok=True)
            removed.append(path)
            log.info("removed the workspace of a dead run: %s", path)
        finally:
            os.close(fd)
    return removed


def _link_dvc_config(repo: Path, path: Path, cache_dir: str) -> None:
    """Point the workspace at the checkout's DVC cache and local config without copying it."""
    local = repo / ".dvc" / "config.local"
    if local.is_file():
        (path / ".dvc" / "config.local").symlink_to(local)
    from dvc.repo import Repo

    with Repo(str(path)) as dvc_repo:
        configured = dvc_repo.config["cache"].get("dir")
    if configured is None:
        shared = Path(cache_dir).resolve()
        shared.mkdir(parents=True, exist_ok=True)  # a checkout that never cached anything yet
        (path / ".dvc" / "cache").symlink_to(shared, target_is_directory=True)
    elif Path(configured).resolve() != Path(cache_dir).resolve():
        raise ConfigError(
            f"{repo}/.dvc: cache.dir {configured!r} is relative to the checkout, so a run's"
            f" workspace would not find it; set it absolute (`dvc cache dir --local {cache_dir}`)"
        )


def open_workspace(
    repo: str | os.PathLike[str], rev: str, cache_dir: str, parent: str | None = None
) -> Workspace:
    """Check out ``rev`` of ``repo`` into a fresh worktree under ``parent`` (default: this
    machine's :func:`~onceflow.hostcache.workspaces_dir`) that uses ``cache_dir`` as its DVC
    cache and the checkout's local DVC config (remote credentials), linked. Workspaces of dead
    runs under ``parent`` are removed first."""
    repo = Path(repo).resolve()
    commit = resolve_commit(repo, rev)
    base = Path(parent) if parent else hostcache.workspaces_dir()
    base.mkdir(parents=True, exist_ok=True)
    remove_stale_workspaces(base)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    _hold(path, repo, commit)
    try:
        path.rmdir()  # git makes it
        _git(repo, "worktree", "add", "--detach", "--force", str(path), commit)
        _link_dvc_config(repo, path, cache_dir)
    except BaseException:
        _discard(path, repo)
        _release(path)
        raise
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
    finally:
        _release(ws.path)
