"""Assemble the specialization report from the pipeline's outputs (the ``specialize_report``
stage, :mod:`onceflow.specialization.stage`, calls :func:`specialization_report`).

Reads, per target T: ``<latency>/T/`` (estimator + validation subnets), ``<search>/T/
selected.json`` (one pick per budget) and ``<artifacts>/T/*/manifest.json`` (accuracies of the
packaged picks, int8 quantization drops); evaluates only the foreign picks whose accuracy under a
host's precision no package measured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from onceflow.artifacts import (
    ArtifactError,
    latency_validation,
    manifest_file,
    selection,
)
from onceflow.config import Params
from onceflow.data.prepared import PreparedData
from onceflow.errors import SearchError
from onceflow.latency import load_estimator
from onceflow.package.manifest import MANIFEST
from onceflow.specialization.accuracy import (
    accuracy_under_target,
    known_accuracies,
    precision_key,
)
from onceflow.specialization.matrix import Slot, TargetPicks, cross_target
from onceflow.supernet import Arch, Supernet

log = logging.getLogger(__name__)


def read_slots(doc: Any, source: str) -> tuple[Slot, ...]:
    """(budget_ms, arch) per entry of a ``selected.json`` document, in budget order."""
    entries = doc.get("selected") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SearchError(f"{source}: no selected archs (expected a non-empty 'selected' list)")
    slots = []
    for i, e in enumerate(entries):
        raw = e.get("arch_json", e.get("arch")) if isinstance(e, dict) else None
        if raw is None or e.get("budget_ms") is None:
            raise SearchError(f"{source}: selected[{i}] lacks arch_json/arch or budget_ms")
        arch = Arch.parse(raw) if isinstance(raw, str) else Arch.from_json(raw)
        slots.append(Slot(float(e["budget_ms"]), arch))
    return tuple(sorted(slots, key=lambda s: s.budget_ms))


def quantization_drops(artifacts: Path, names: list[str]) -> dict[str, dict[str, float]]:
    """Per int8 target: the accuracy drop (pp, fp32 -> int8) over its packaged picks."""
    out = {}
    for name in names:
        drops = [
            float(
                manifest_file(p, ArtifactError)
                .get("quantization", {})
                .get("accuracy_drop_pp", np.nan)
            )
            for p in sorted((artifacts / name).glob(f"*/{MANIFEST}"))
        ]
        drops = [d for d in drops if not np.isnan(d)]
        if drops:
            out[name] = {
                "mean_pp": round(float(np.mean(drops)), 3),
                "max_pp": round(float(np.max(drops)), 3),
                "n": len(drops),
            }
    return out


def host_measurer(
    supernet: Supernet, data: PreparedData, params: Params
) -> Callable[[Arch, str], float | None]:
    """(arch, host) -> median latency (ms) of the BN-recalibrated subnet on the host's backend,
    under the host's table protocol (int8 hosts: quantized as their packages are); None when
    the host's backend cannot run on this machine."""
    from onceflow.latency.backends import make_backend
    from onceflow.latency.calibration_data import target_calibration_images
    from onceflow.latency.table import protocol_from_config

    def measure(arch: Arch, host: str) -> float | None:
        target = params.latency.targets[host]
        if target.timings == "imported":
            return None  # the device is not attached: its estimator stands for it
        backend = make_backend(target, target_calibration_images(target, data, params.base.seed))
        ok, why = backend.available()
        if not ok:
            log.info("not timing on %s here: %s", host, why)
            return None
        protocol = protocol_from_config(params.latency, target, params.base.seed)
        shape = (target.batch_size, data.meta.channels, arch.resolution, arch.resolution)
        return backend.measure(supernet.extract(arch).eval(), shape, protocol).median

    return measure


def specialization_report(
    params: Params,
    supernet: Supernet,
    data: PreparedData,
    *,
    latency_root: Path,
    search_root: Path,
    artifacts_root: Path,
    measure_latency: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline metrics, details) over every target in ``params.latency.targets``; with
    ``measure_latency`` every pick is also timed on each host whose backend runs here."""
    space, targets = supernet.space, params.latency.targets
    picks = []
    for name, target in targets.items():
        est = load_estimator(latency_root / name, space)
        records = latency_validation(latency_root / name / "validation.json")
        picks.append(
            TargetPicks(
                name=name,
                precision=target.precision,
                slots=read_slots(selection(search_root / name / "selected.json"), name),
                predict_ms=lambda archs, est=est: est.predict(space.encode_batch(list(archs))),
                validation_ms={
                    r["arch"]: float(r["measured_ms"])
                    for r in records
                    if r.get("role") == "validation"
                },
            )
        )
    known = known_accuracies(artifacts_root, targets)
    evaluated = []

    def accuracy(arch: Arch, host: str) -> float | None:
        key = precision_key(targets[host])
        if key is None:
            return None
        if (arch, key) not in known:
            known[(arch, key)] = accuracy_under_target(supernet, arch, data, params, host)
            evaluated.append({"arch": str(arch), "precision": key})
        return known[(arch, key)]

    measure = host_measurer(supernet, data, params) if measure_latency else None
    headline, details = cross_target(picks, accuracy, measure)
    drops = quantization_drops(artifacts_root, list(targets))
    details["quantization_drop_pp"] = drops
    details["evaluated_here"] = evaluated
    return headline, details
