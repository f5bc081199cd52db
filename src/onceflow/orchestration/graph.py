"""The flow's view of the DVC pipeline: which stages run before, per and after the targets.

DVC owns the DAG (``dvc.yaml``). This module only *reads* it and splits it into three phases:

- ``pre``: global stages no per-target stage precedes (prepare, train_supernet, predictor),
- ``targets``: per target ``T`` the stages DVC names ``<stage>@T`` (from ``foreach:
  ${latency.targets}``), in dependency order (latency_table@T, search@T, package@T),
- ``post``: global stages downstream of any per-target stage (publish).

Each phase lists stages in a topological order of DVC's graph, so running a phase's stages one by
one with ``dvc repro --single-item`` is exactly ``dvc repro`` split into steps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onceflow.errors import ConfigError
from onceflow.orchestration.dvc import DVC_LOCK

FOREACH_SEP = "@"  # DVC names foreach stages `<stage>@<key>`


@dataclass(frozen=True)
class Plan:
    """Stages to run, by phase; every list is in dependency order."""

    pre: tuple[str, ...]
    targets: Mapping[str, tuple[str, ...]]  # target name -> its stages
    post: tuple[str, ...]
    upstream: Mapping[str, frozenset[str]] = field(default_factory=dict)  # direct deps per stage

    @property
    def stages(self) -> tuple[str, ...]:
        """All stages, in an order `dvc repro` could run them."""
        return self.pre + tuple(s for st in self.targets.values() for s in st) + self.post

    def inputs_of(self, target: str) -> tuple[str, ...]:
        """Stages outside ``target`` whose outputs its stages read (what a worker pulls)."""
        own = set(self.targets[target])
        deps = {u for s in own for u in self.upstream.get(s, ()) if u not in own}
        return tuple(s for s in self.stages if s in deps)


def target_of(stage: str, targets: Iterable[str]) -> str | None:
    """The target a stage belongs to (``search@gpu-trt`` -> ``gpu-trt``), or None if global."""
    _, sep, key = stage.rpartition(FOREACH_SEP)
    return key if sep and key in set(targets) else None


def _toposort(stages: list[str], upstream: Mapping[str, frozenset[str]]) -> list[str]:
    """Kahn's algorithm; ties keep ``stages`` (dvc.yaml) order so plans are deterministic."""
    done: set[str] = set()
    out: list[str] = []
    while len(out) < len(stages):
        ready = [s for s in stages if s not in done and upstream.get(s, frozenset()) <= done]
        if not ready:
            raise ConfigError(f"dvc.yaml: cycle among stages {sorted(set(stages) - done)}")
        out.append(ready[0])
        done.add(ready[0])
    return out


def make_plan(
    stages: list[str], upstream: Mapping[str, Iterable[str]], targets: Iterable[str]
) -> Plan:
    """Split a stage graph (``upstream[s]`` = stages ``s`` reads from) into pre/targets/post."""
    targets = list(targets)
    up = {s: frozenset(u for u in upstream.get(s, ()) if u in stages) for s in stages}
    order = _toposort(stages, up)
    owner = {s: target_of(s, targets) for s in order}
    after_target: set[str] = set()  # global stages downstream of some per-target stage
    for s in order:
        if owner[s] is None and any(owner[u] is not None or u in after_target for u in up[s]):
            after_target.add(s)
    for s in order:
        bad = [u for u in up[s] if u in after_target or owner[u] not in (None, owner[s])]
        if owner[s] is not None and bad:
            raise ConfigError(
                f"dvc.yaml: per-target stage '{s}' depends on {sorted(bad)}; a target's stages may"
                " only read global stages that run before all targets and their own target's stages"
            )
    return Plan(
        pre=tuple(s for s in order if owner[s] is None and s not in after_target),
        targets={t: tuple(s for s in order if owner[s] == t) for t in targets},
        post=tuple(s for s in order if s in after_target),
        upstream=up,
    )


def read_targets(params_path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``latency.targets`` from params.yaml: target name -> its config (may hold ``work_pool``)."""
    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8")) or {}
    targets = ((raw.get("latency") or {}).get("targets")) or {}
    if not isinstance(targets, dict):
        raise ConfigError(
            f"{params_path}: latency.targets must be a mapping name -> target config,"
            f" got {type(targets).__name__}"
        )
    return {str(k): dict(v or {}) for k, v in targets.items()}


def work_pools(targets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Targets that run on their own hardware: target name -> Prefect work pool name."""
    return {t: str(c["work_pool"]) for t, c in targets.items() if c.get("work_pool")}


def _address(stage: Any, root: str) -> str:
    """How ``dvc repro`` run in ``root`` names the stage (``name`` for the root dvc.yaml)."""
    rel = os.path.relpath(stage.path, root)
    name = getattr(stage, "name", None)
    return name if rel == "dvc.yaml" and name else (f"{rel}:{name}" if name else rel)


def read_plan(root: str | os.PathLike[str]) -> Plan:
    """Build the plan from DVC's own stage graph of the repo at ``root`` (DVC Python API)."""
    from dvc.repo import Repo

    root = os.path.abspath(root)
    with DVC_LOCK, Repo(root) as repo:
        graph = repo.index.graph  # edge (stage, upstream stage)
        stages = [_address(s, root) for s in repo.index.stages]
        upstream: dict[str, set[str]] = {s: set() for s in stages}
        for down, up in graph.edges:
            upstream[_address(down, root)].add(_address(up, root))
    return make_plan(stages, upstream, read_targets(Path(root) / "params.yaml"))


def changed_stages(root: str | os.PathLike[str]) -> set[str]:
    """Stages ``dvc status`` reports as changed (deps, params, cmd or outs differ from dvc.lock,
    or outputs missing). A stage not listed, whose upstream stages do not run, is one that
    ``dvc repro`` would skip: the flow skips it without starting DVC."""
    from dvc.repo import Repo

    root = os.path.abspath(root)
    with DVC_LOCK, Repo(root) as repo, repo.lock:
        return {_address(s, root) for s in repo.index.stages if s.status()}
