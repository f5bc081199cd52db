"""What device_results@<T> passes on: an imported target's timings file, or just a header;
and the LUT it transfers from an attached target (``devices/<T>.lut.json``, written by
``onceflow latency import --transfer-from S``), or a record that there is none.

Kept out of :mod:`onceflow.latency` (whose package pulls torch) so the stage's code
dependencies stay small. The file's contents are checked where they are used
(:func:`onceflow.latency.imported.read_results`).
"""

from __future__ import annotations

import json
from pathlib import Path

from onceflow.config import Params
from onceflow.errors import ConfigError

RESULTS_HEADER = ("arch", "latency_ms")
# The transfer file of a target without one (attached, or imported without --transfer-from).
NO_TRANSFER = json.dumps({"transfer_from": None}) + "\n"


def transfer_path(results_path: str | Path, target: str) -> Path:
    """Where an imported target's transferred LUT lives: ``<T>.lut.json`` next to its results."""
    return Path(results_path).parent / f"{target}.lut.json"


def _results_path(params: Params, target: str, devices: Path) -> Path | None:
    """The imported ``target``'s results file (checked to lie in ``devices``, the folder DVC
    tracks); None for an attached target."""
    cfg = params.latency
    if target not in cfg.targets:
        raise ConfigError(f"latency.targets has no {target!r} ({', '.join(cfg.targets)})")
    t = cfg.targets[target]
    if t.timings != "imported":
        return None
    path = Path(t.results_path(target))
    if not path.resolve().is_relative_to(devices.resolve()):
        raise ConfigError(
            f"latency.targets.{target}.results: {path} must lie in {devices}/ (the folder the "
            "device_results stage depends on)"
        )
    return path


def device_results_text(params: Params, target: str, devices: Path) -> str:
    """The imported ``target``'s results file, or the CSV header alone for an attached target:
    so new timings of one device reach only that device's stages."""
    path = _results_path(params, target, devices)
    if path is None:
        return ",".join(RESULTS_HEADER) + "\n"
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing; run `onceflow latency import --target {target} RESULTS.csv` first"
        )
    return path.read_text(encoding="utf-8")


def device_transfer_text(params: Params, target: str, devices: Path) -> str:
    """The imported ``target``'s transferred LUT file as written by ``onceflow latency import
    --transfer-from``, else :data:`NO_TRANSFER` (for every attached target alike)."""
    path = _results_path(params, target, devices)
    lut = None if path is None else transfer_path(path, target)
    return lut.read_text(encoding="utf-8") if lut is not None and lut.is_file() else NO_TRANSFER
