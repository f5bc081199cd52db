"""State one machine keeps across runs, outside any workspace: training checkpoints, the
predictor's measured rows and the flows' run workspaces.

A flow run works in a fresh git worktree that is removed when it ends; what a rerun must find
(a half-trained supernet, half the predictor's measurements) lives here instead, keyed as before
by everything that changes it (a checkpoint's run fingerprint, a row's measurement context), so
a rerun on this machine resumes and a changed input never reuses. The root is
``$ONCEFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/onceflow``, else ``~/.cache/onceflow``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "ONCEFLOW_CACHE_DIR"
# Keyed entries (a fingerprint's checkpoints, a context's rows) untouched this long are removed
# when a sibling is opened: they belong to params, data or code nobody has run for weeks.
STALE_AFTER_S = 14 * 24 * 3600.0


def root() -> Path:
    """This machine's onceflow cache directory (created on first use by :func:`subdir`)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "onceflow").resolve()


def subdir(*parts: str) -> Path:
    """``root()/parts...``, created."""
    path = root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir() -> Path:
    """Where supernet training keeps its checkpoints (one folder per run fingerprint)."""
    return subdir("checkpoints", "supernet")


def predictor_rows_dir() -> Path:
    """Where the predictor keeps its measured rows (one CSV per measurement context)."""
    return subdir("predictor")


def workspaces_dir() -> Path:
    """Where the flows check out their run workspaces."""
    return subdir("runs")


def _newest_mtime(path: Path) -> float:
    times = [path.stat().st_mtime]
    if path.is_dir():
        times += [p.stat().st_mtime for p in path.rglob("*") if p.exists()]
    return max(times)


def prune_siblings(keep: Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the entries beside ``keep`` that nothing touched for ``older_than_s`` seconds
    (never ``keep`` itself); returns what was removed."""
    now = time.time()
    removed = []
    if not keep.parent.is_dir():
        return removed
    for other in keep.parent.iterdir():
        if other.name == keep.name or other.name.startswith("."):
            continue
        try:
            if now - _newest_mtime(other) < older_than_s:
                continue
            if other.is_dir():
                shutil.rmtree(other)
            else:
                other.unlink()
        except OSError as err:  # another process removed or holds it: leave it
            log.debug("cannot prune %s: %s", other, err)
            continue
        removed.append(other)
        log.info("removed %s (unused for %.0f days)", other, older_than_s / 86400)
    return removed
