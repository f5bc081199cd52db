"""Which targets run on their own hardware: ``latency.targets.<T>.work_pool`` in params.yaml."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from onceflow.errors import ConfigError


def read_targets(params_path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``latency.targets`` from params.yaml: target name -> its config (may hold ``work_pool``)."""
    raw = yaml.safe_load(Path(params_path).read_text(encoding="utf-8")) or {}
    targets = (raw.get("latency") or {}).get("targets") or {}
    if not isinstance(targets, dict):
        raise ConfigError(
            f"{params_path}: latency.targets must be a mapping name -> target config,"
            f" got {type(targets).__name__}"
        )
    return {str(k): dict(v or {}) for k, v in targets.items()}


def work_pools(targets: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Targets that run on their own hardware: target name -> Prefect work pool name."""
    return {t: str(c["work_pool"]) for t, c in targets.items() if c.get("work_pool")}
