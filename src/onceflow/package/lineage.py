"""Where a package came from: git commit, and DVC's own records of everything upstream.

During ``dvc repro`` the stages upstream of ``package@<target>`` are locked before it runs, so
``dvc.lock`` holds the md5 DVC computed for the data, the supernet, the latency table, the
predictor and the selection the package is built from, and the params each of those stages ran
with. This module reads those records through DVC's own API (``dvc.repo.Repo``: the stages of
``dvc.yaml`` with their lock entries) instead of parsing ``dvc.lock`` by hand, and asks DVC
(its state cache, so nothing already hashed is hashed again) whether the workspace still
matches them. The content hashes that enter the model id are DVC's md5 of the workspace
inputs, so they equal the ``dvc.lock`` entries whenever the lock is current, and stay honest
when it is not (a stage run by hand): then the lineage says ``matches_workspace: false``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onceflow.environment import installed_versions

log = logging.getLogger(__name__)

# The roles whose content determines a package's weights (they enter the model id).
IDENTITY_ROLES = ("data", "supernet")


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


def _standalone_md5(path: Path) -> str | None:
    """DVC's md5 of a file or directory outside any DVC repo (dvc-data's own hashing)."""
    if not path.exists():
        return None
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem
    from dvc_objects.fs.memory import MemoryFileSystem

    odb = HashFileDB(MemoryFileSystem(), "/odb")
    _, _, obj = build(odb, str(path.resolve()), LocalFileSystem(), "md5", dry_run=True)
    return str(obj.hash_info.value)


def _out_hashes(out: Any, full: str) -> tuple[str | None, str | None]:
    """(the md5 dvc.lock records for ``full``, DVC's md5 of it in the workspace), where
    ``full`` is a DVC out or a file or directory inside a directory out. The record of a path
    inside a directory out comes from the directory's listing in DVC's cache (None when the
    cache lacks it); the workspace hash from DVC's state, so nothing unchanged is read again."""
    if str(out.fs_path) == full:
        recorded = out.hash_info.value if out.hash_info else None
        return recorded, (out.get_hash().value if out.exists else None)
    from dvc_data.hashfile.build import build

    obj = out.get_obj(filter_info=full) if out.hash_info and out.hash_info.isdir else None
    recorded = obj.hash_info.value if obj is not None and obj.hash_info else None
    if not os.path.exists(full):
        return recorded, None
    _, _, now = build(out.cache, full, out.fs, out.hash_name, ignore=out.dvcignore, dry_run=True)
    return recorded, str(now.hash_info.value)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _params_of(stage: Any) -> dict[str, Any]:
    from dvc.dependency.param import ParamsDependency

    return {
        str(d.def_path): dict(d.hash_info.value or {})
        for d in stage.deps
        if isinstance(d, ParamsDependency)
    }


def _upstream(stages: list[Any], producers: list[Any]) -> list[Any]:
    """``producers`` and every stage they depend on, in dvc.yaml order."""
    by_out = [(str(o.fs_path), s) for s in stages for o in s.outs]
    seen: dict[str, Any] = {}
    todo = list(producers)
    while todo:
        stage = todo.pop()
        if stage.name in seen:
            continue
        seen[stage.name] = stage
        for dep in stage.deps:
            path = str(getattr(dep, "fs_path", ""))
            todo += [s for out, s in by_out if _inside(path, out) or _inside(out, path)]
    return [s for s in stages if s.name in seen]


def dvc_records(
    inputs: Mapping[str, str], root: str | Path = "."
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(per input role: its path, producing stage, dvc.lock md5 and whether the workspace
    matches it; per upstream stage: the params and out md5s dvc.lock records for it).

    Outside a DVC repository there is no record: md5 is DVC's hash of the workspace, stage None.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        log.warning("%s is not a DVC repository: lineage has no dvc.lock records", root)
        return {
            role: {"path": p, "stage": None, "md5": None, "matches_workspace": None,
                   "workspace_md5": _standalone_md5(Path(root, p))}
            for role, p in inputs.items()
        }, {}  # fmt: skip
    with repo:
        stages = list(repo.index.stages)
        roles: dict[str, dict[str, Any]] = {}
        producers = []
        for role, p in inputs.items():
            full = os.path.abspath(os.path.join(str(root), p))
            match = [(s, o) for s in stages for o in s.outs if _inside(full, str(o.fs_path))]
            if not match:
                roles[role] = {"path": p, "stage": None, "md5": None, "matches_workspace": None,
                               "workspace_md5": _standalone_md5(Path(full))}  # fmt: skip
                continue
            stage, out = match[0]
            producers.append(stage)
            recorded, current = _out_hashes(out, full)
            roles[role] = {
                "path": p,
                "stage": stage.name,
                "md5": recorded,
                "matches_workspace": None if recorded is None else recorded == current,
                "workspace_md5": current,
            }
        upstream = {
            s.name: {
                "params": _params_of(s),
                "outs": {
                    str(o.def_path): (o.hash_info.value if o.hash_info else None) for o in s.outs
                },
            }  # fmt: skip
            for s in _upstream(stages, producers)
        }
    return roles, upstream


def collect_lineage(
    inputs: dict[str, str], params: dict[str, Any], repo_root: str | Path = "."
) -> tuple[dict[str, Any], dict[str, str]]:
    """(lineage for the manifest, content hashes for the model id).

    ``inputs`` maps a role (data, supernet, latency, predictor, selection) to its path relative
    to ``repo_root``. The lineage holds the git state, each input's ``dvc.lock`` record, the
    params and outs ``dvc.lock`` records for every upstream stage, and the full params. The
    content hashes are DVC's md5 of the data and the supernet as they are in the workspace.
    """
    roles, stages = dvc_records(inputs, repo_root)
    for role, rec in roles.items():
        if rec["matches_workspace"] is False:
            log.warning(
                "%s (%s) differs from what dvc.lock records for stage %s; the lineage records "
                "both hashes -- run the pipeline with `dvc repro` for a reproducible package",
                rec["path"],
                role,
                rec["stage"],
            )
    lineage = {
        "git": git_state(repo_root),
        "versions": installed_versions(),  # the libraries that change numbers
        "dvc_lock": roles,
        "stages": stages,
        "params": params,
    }
    hashes = {
        role: str(roles[role]["workspace_md5"])
        for role in IDENTITY_ROLES
        if role in roles and roles[role]["workspace_md5"] is not None
    }
    return lineage, hashes


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out
