"""Gather a run's outputs for the report: metrics (headline + details), plots, manifests.

Everything is optional: a missing or unreadable file leaves its field ``None`` (or empty), and
the page says so. Nothing here raises on pipeline outputs; only the report's own output path
can fail. Images are read as bytes so the page can embed them (no links to local files).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from onceflow.metrics import DETAILS_SUFFIX, read_metrics
from onceflow.package.lineage import git_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportPaths:
    """Where the run's outputs live, relative to the project root (dvc.yaml passes them)."""

    params: str = "params.yaml"
    validation: str = "reports/data_validation.json"
    metrics: str = "metrics"
    plots: str = "plots"
    live: str = "dvclive/train_supernet"
    artifacts: str = "artifacts"


@dataclass(frozen=True)
class Figure:
    """A PNG to embed; ``source`` is the file it came from (shown as a caption)."""

    source: str
    png: bytes


@dataclass
class TargetOutputs:
    """Everything the run produced for one latency target."""

    name: str
    config: dict[str, Any] | None = None  # latency.targets.<name> from params.yaml
    latency: dict[str, Any] | None = None  # metrics/latency/<name>(.details).json
    latency_plot: Figure | None = None
    search: dict[str, Any] | None = None  # metrics/search/<name>(.details).json
    search_plot: Figure | None = None
    package: dict[str, Any] | None = None  # metrics/package/<name>(.details).json


@dataclass
class RunOutputs:
    """One run of the pipeline, as the report sees it."""

    root: str
    git: dict[str, Any]
    targets: dict[str, TargetOutputs] = field(default_factory=dict)
    gate: dict[str, Any] | None = None  # reports/data_validation.json
    data: dict[str, Any] | None = None  # metrics/data(.details).json
    supernet: dict[str, Any] | None = None
    training_plot: Figure | None = None
    predictor: dict[str, Any] | None = None
    predictor_plot: Figure | None = None
    specialization: dict[str, Any] | None = None
    specialization_plot: Figure | None = None
    manifests: list[dict[str, Any]] = field(default_factory=list)
    publish: dict[str, Any] | None = None


def read_json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as err:  # JSON, UTF-8, nesting, huge ints
        log.warning("report: skipping unreadable %s (%s)", path, type(err).__name__)
        return None


def read_png(root: Path, rel: str | Path) -> Figure | None:
    """The PNG at ``root/rel`` (checked by its signature), or None."""
    path = root / rel
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        log.warning("report: %s is not a PNG; not embedded", path)
        return None
    return Figure(str(Path(rel).as_posix()), data)


def configured_targets(params_file: Path) -> dict[str, dict[str, Any]]:
    """``latency.targets`` of params.yaml as raw YAML (the report must render even when the
    params no longer validate, so no schema here)."""
    try:
        doc = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    targets = (doc.get("latency") or {}).get("targets") if isinstance(doc, dict) else None
    return {str(k): dict(v or {}) for k, v in targets.items()} if isinstance(targets, dict) else {}


def _stems(directory: Path) -> set[str]:
    """Target names with a headline metrics file in ``directory`` (details files excluded)."""
    if not directory.is_dir():
        return set()
    return {
        p.name[: -len(".json")]
        for p in directory.glob("*.json")
        if not p.name.endswith(DETAILS_SUFFIX)
    }


def collect_run(root: str | os.PathLike[str], paths: ReportPaths | None = None) -> RunOutputs:
    """Read every output the report shows from the project at ``root``."""
    root = Path(root)
    p = paths or ReportPaths()
    met, plots = root / p.metrics, Path(p.plots)
    run = RunOutputs(root=str(root.resolve()), git=git_state(root))
    configured = configured_targets(root / p.params)
    found = set()
    for sub in ("latency", "search", "package"):
        found |= _stems(met / sub)
    for name in sorted(configured) + sorted(found - set(configured)):
        run.targets[name] = TargetOutputs(
            name=name,
            config=configured.get(name),
            latency=read_metrics(met / "latency" / f"{name}.json"),
            latency_plot=read_png(root, plots / "latency" / f"{name}.png"),
            search=read_metrics(met / "search" / f"{name}.json"),
            search_plot=read_png(root, plots / "search" / f"{name}.png"),
            package=read_metrics(met / "package" / f"{name}.json"),
        )
    gate = read_json_or_none(root / p.validation)
    run.gate = gate if isinstance(gate, dict) else None
    run.data = read_metrics(met / "data.json")
    run.supernet = read_metrics(met / "supernet.json")
    run.training_plot = read_png(root, Path(p.live) / "plots" / "images" / "training_curves.png")
    run.predictor = read_metrics(met / "predictor.json")
    run.predictor_plot = read_png(root, plots / "predictor_learning_curve.png")
    run.specialization = read_metrics(met / "specialization.json")
    run.specialization_plot = read_png(root, plots / "specialization.png")
    run.publish = read_metrics(met / "publish.json")
    for mf in sorted((root / p.artifacts).glob("*/*/manifest.json")):
        doc = read_json_or_none(mf)
        if isinstance(doc, dict):
            doc.setdefault("target", mf.parent.parent.name)
            doc.setdefault("model_id", mf.parent.name)
            run.manifests.append(doc)
    return run
