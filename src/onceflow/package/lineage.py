"""Where a package came from: git commit, DVC-tracked upstream artifacts, content hashes.

``dvc.lock`` records the md5 of every stage output after the stage ran; during ``dvc repro``
the upstream stages of ``package`` are locked before it runs, so their entries describe exactly
the data, supernet, latency table and predictor the package was built from. Outside DVC those
entries can be missing or stale, so the model id uses content hashes computed here instead.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


def git_state(repo: str | Path = ".") -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the work tree (None: not a repo)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def dvc_lock_hashes(lock_file: str | Path, paths: Iterable[str]) -> dict[str, str | None]:
    """The md5 that ``dvc.lock`` records for each out path (None when it records none)."""
    wanted = {str(Path(p)): None for p in paths}
    try:
        lock = yaml.safe_load(Path(lock_file).read_text(encoding="utf-8")) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return dict(wanted)
    found: dict[str, str | None] = dict(wanted)
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            path = str(Path(out.get("path", "")))
            if path in found and out.get("md5"):
                found[path] = str(out["md5"])
    return found


def tree_sha256(path: str | Path) -> str:
    """sha256 over the relative names and contents of every file under ``path`` (or of the file)."""
    root = Path(path)
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() if f != root else b"")
        h.update(b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def collect_lineage(
    inputs: dict[str, str], params: dict[str, Any], lock_file: str | Path = "dvc.lock"
) -> tuple[dict[str, Any], dict[str, str]]:
    """(lineage for the manifest, content hashes for the model id).

    ``inputs`` maps a role (data, supernet, latency, predictor, selection) to its path. The
    lineage holds the git state, the dvc.lock md5 of each input and the params; content hashes
    are computed for the data and the supernet, the inputs that determine the model's weights.
    """
    md5 = dvc_lock_hashes(lock_file, inputs.values())
    lineage = {
        "git": git_state(Path(lock_file).parent),
        "dvc_lock": {role: {"path": p, "md5": md5[str(Path(p))]} for role, p in inputs.items()},
        "params": params,
    }
    hashes = {role: tree_sha256(inputs[role]) for role in ("data", "supernet") if role in inputs}
    return lineage, hashes
