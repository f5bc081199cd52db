"""The two commands of the unattached-device round trip, as functions over paths.

``export_for_target``: N covering subnets of the trained supernet's space as ONNX files, their
manifest and a README into a new directory (written whole or not at all).
``import_for_target``: check a results CSV against the space and write the target's merged
results file (``latency.targets.<T>.results``, default ``devices/<T>.csv``), which is what
``device_results@<T>`` and then ``latency_table@<T>`` read; with ``transfer_from`` S, also S's
lut.json as ``<T>.lut.json`` next to it (:func:`~onceflow.latency.imported.transfer_json`), and
without, any such file of an earlier import is removed. Bad input raises ConfigError naming
the file and value, and nothing is written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from onceflow.config import Params
from onceflow.devices import transfer_path
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
    transfer_json,
)
from onceflow.latency.lut import LUT_FILE
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
    transfer_from: str | None = None,
    latency_dir: str | os.PathLike[str] = "latency",
    root: str | os.PathLike[str] = ".",
    params_file: str | os.PathLike[str] = "params.yaml",
) -> tuple[Path, int]:
    """Validate ``results`` and write the target's results file (under ``root``), and the LUT
    of attached target ``transfer_from`` (``latency_dir``/<S>/lut.json) next to it; returns
    (the results file's path, distinct subnets)."""
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
    space = _space(Path(supernet_dir))
    rows = read_results(
        text,
        space,
        source=str(src),
        min_rows=t.measured_subnets,
        ids=manifest_ids(Path(manifest) if manifest else None),
    )
    transfer = None
    if transfer_from is not None:
        lat = Path(root) / latency_dir
        transfer = _transfer(params, target, transfer_from, space, lat, params_file)
    dest = Path(root) / t.results_path(target)
    write_text_atomic(dest, results_csv(rows))
    lut_dest = transfer_path(dest, target)
    if transfer is not None:
        write_json_atomic(lut_dest, transfer)
        log.info("%s: %s's LUT, a feature candidate of %s's fit", lut_dest, transfer_from, target)
    elif lut_dest.exists():
        lut_dest.unlink()  # a re-import without --transfer-from never keeps an old LUT
        log.info("removed %s (imported without --transfer-from)", lut_dest)
    return dest, len(rows)


def _transfer(
    params: Params,
    target: str,
    source: str,
    space: SearchSpace,
    latency_dir: Path,
    params_file: str | os.PathLike[str],
) -> dict:
    """devices/<T>.lut.json's contents: attached target ``source``'s checked lut.json."""
    if source == target:
        raise ConfigError(f"--transfer-from {source}: a target cannot transfer from itself")
    s = _target(params, source, params_file)
    path = latency_dir / source / LUT_FILE
    if s.timings == "imported" or not path.is_file():
        raise ConfigError(
            f"--transfer-from {source}: {path} missing; name an attached target whose table "
            f"is built (dvc repro latency_table@{source})"
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.__class__.__name__})") from None
    return transfer_json(source, data, space, str(path))
