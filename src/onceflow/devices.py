"""What device_results@<T> passes on: an imported target's timings file, or just a header.

Kept out of :mod:`onceflow.latency` (whose package pulls torch) so the stage's code
dependencies stay small. The file's contents are checked where they are used
(:func:`onceflow.latency.imported.read_results`).
"""

from __future__ import annotations

from pathlib import Path

from onceflow.config import Params
from onceflow.errors import ConfigError

RESULTS_HEADER = ("arch", "latency_ms")


def device_results_text(params: Params, target: str, devices: Path) -> str:
    """The imported ``target``'s results file (it must lie in ``devices``, the folder DVC
    tracks), or the CSV header alone for an attached target: so new timings of one device
    reach only that device's stages."""
    cfg = params.latency
    if target not in cfg.targets:
        raise ConfigError(f"latency.targets has no {target!r} ({', '.join(cfg.targets)})")
    t = cfg.targets[target]
    if t.timings != "imported":
        return ",".join(RESULTS_HEADER) + "\n"
    path = Path(t.results_path(target))
    if not path.resolve().is_relative_to(devices.resolve()):
        raise ConfigError(
            f"latency.targets.{target}.results: {path} must lie in {devices}/ (the folder the "
            "device_results stage depends on)"
        )
    if not path.is_file():
        raise ConfigError(
            f"{path}: missing; run `onceflow latency import --target {target} RESULTS.csv` first"
        )
    return path.read_text(encoding="utf-8")
