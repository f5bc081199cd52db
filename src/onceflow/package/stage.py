"""The ``package@<target>`` stage as one call (:func:`run`): the lineage of its inputs, then
the target's packages (:func:`~onceflow.package.pipeline.package_target`) and its metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch

from onceflow import artifacts
from onceflow.config import Params
from onceflow.data.prepared import load_prepared
from onceflow.hostlock import timed_on_host
from onceflow.io import atomic_dir
from onceflow.metrics import package_headline
from onceflow.package.build import PackageResult
from onceflow.package.lineage import collect_lineage
from onceflow.package.pipeline import package_metrics, package_target
from onceflow.supernet import load_supernet
from onceflow.threads import set_threads


@dataclass(frozen=True)
class PackageRun:
    """What the package stage writes besides the packages: its metrics."""

    results: list[PackageResult]  # one per packaged arch, in selection order
    details: dict[str, Any]  # metrics/package/<target>.details.json (:func:`package_metrics`)

    @property
    def headline(self) -> dict[str, Any]:
        return package_headline(self.details)

    @property
    def summary(self) -> str:
        return f"packaged {len(self.results)} model(s) for {self.details['target']}"


@dataclass(frozen=True)
class Paths:
    """Where ``package@<target>`` reads, and ``out``, the folder it writes the packages into
    (replaced whole, only on success)."""

    target: str = field(metadata={"help": "a name under latency.targets"})
    supernet: str
    data: str
    selection: str
    latency: str
    out: str
    predictor: str = field(default="models/predictor", metadata={"help": "in the lineage only"})


def run(params: Params, paths: Paths) -> PackageRun:
    """The package stage from its input paths: lineage and content hashes of the inputs, then
    the target's packages written whole into ``paths.out`` (replaced only on success), timed
    under the machine's timing lock (:mod:`onceflow.hostlock`)."""
    target, selection = paths.target, paths.selection
    set_threads(params.base.threads)
    torch.manual_seed(params.base.seed)
    inputs = {
        "data": paths.data,
        "supernet": paths.supernet,
        "latency": paths.latency,
        "predictor": paths.predictor,
        "selection": str(selection).rsplit("/", 1)[0],
    }
    lineage, hashes = collect_lineage(inputs, params.model_dump(mode="json"))
    with atomic_dir(paths.out) as tmp, timed_on_host(f"package@{target}") as host:
        results = package_target(
            load_supernet(paths.supernet),
            artifacts.selection(selection),
            load_prepared(paths.data),
            target_name=target,
            params=params,
            lineage=lineage,
            content_hashes=hashes,
            out_root=tmp,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            selection_source=selection,
        )
    return PackageRun(results, {**package_metrics(target, results), "host": host})
