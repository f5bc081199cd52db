"""The two commands of the unattached-device round trip, as functions over paths.

``export_for_target``: N covering subnets of the trained supernet's space as ONNX files, their
manifest and a README into a new directory (written whole or not at all).
``import_for_target``: check a results CSV against the space and write the target's merged
results file (``latency.targets.<T>.results``, default ``devices/<T>.csv``), which is what
``device_results@<T>`` and then ``latency_table@<T>`` read. Bad input raises ConfigError naming
the file and value, and nothing is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from onceflow.config import Params
from onceflow.errors import ConfigError
from onceflow.io import (
    atomic_dir,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from onceflow.latency.imported import (
    MANIFEST,
    covering_archs,
    export_subnets,
    manifest_ids,
    manifest_json,
    read_results,
    readme_text,
    results_csv,
)
from onceflow.supernet.space import SearchSpace

log = logging.getLogger(__name__)
SPACE_FILE = "space.json"


def _target(params: Params, name: str, params_file: str | os.PathLike[str]):  # noqa: ANN202
    targets = params.latency.targets
    if name not in targets:
        raise ConfigError(f"{params_file}: latency.targets has no {name!r} ({', '.join(targets)})")
    return targets[name]


def _space(supernet_dir: Path) -> SearchSpace:
    path = supernet_dir / SPACE_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: missing; train the supernet first (dvc repro train_supernet)")
    return SearchSpace.from_json(read_json(path))


def export_for_target(
    params: Params,
    target: str,
    n: int,
    out: str | os.PathLike[str],
    supernet_dir: str | os.PathLike[str] = "models/supernet",
    *,
    params_file: str | os.PathLike[str] = "params.yaml",
) -> Path:
    """Write ``out``/s000.onnx ... + manifest.json + README.txt; refuses an existing ``out``."""
    from onceflow.latency.export import to_onnx_bytes
    from onceflow.supernet import load_supernet

    t = _target(params, target, params_file)
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out}: already exists; choose a new --out directory")
    supernet = load_supernet(supernet_dir).eval()
    space = supernet.space
    archs = covering_archs(space, n, seed=params.base.seed)
    subnets = export_subnets(space, supernet.extract, archs, t.batch_size, to_onnx_bytes)
    with atomic_dir(out) as tmp:
        for s in subnets:
            write_bytes_atomic(tmp / s.file, s.onnx)
        write_json_atomic(tmp / MANIFEST, manifest_json(target, space, subnets))
        write_text_atomic(tmp / "README.txt", readme_text(target))
    log.info("exported %d subnets for %s to %s", len(subnets), target, out)
    return out


def import_for_target(
    params: Params,
    target: str,
    results: str | os.PathLike[str],
    supernet_dir: str | os.PathLike[str] = "models/supernet",
    *,
    manifest: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] = ".",
    params_file: str | os.PathLike[str] = "params.yaml",
) -> tuple[Path, int]:
    """Validate ``results`` and write the target's results file (under ``root``); returns
    (its path, distinct subnets)."""
    t = _target(params, target, params_file)
    if t.timings != "imported":
        raise ConfigError(
            f"{params_file}: latency.targets.{target} has timings: {t.timings}; set timings: "
            "imported (and estimator: measured) to import device timings for it"
        )
    src = Path(results)
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{src}: cannot read the results ({err.__class__.__name__})") from None
    rows = read_results(
        text,
        _space(Path(supernet_dir)),
        source=str(src),
        min_rows=t.measured_subnets,
        ids=manifest_ids(Path(manifest) if manifest else None),
    )
    dest = Path(root) / t.results_path(target)
    write_text_atomic(dest, results_csv(rows))
    return dest, len(rows)
