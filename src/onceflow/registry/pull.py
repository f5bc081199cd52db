"""Read side of the registry: list models, choose one, download and verify it.

A pull downloads into a temporary directory beside the destination, verifies the manifest
against the index entry and every file against the manifest (sha256 and size), and only then
moves the directory into place in one rename. Any mismatch raises RegistryError and leaves the
destination exactly as it was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from onceflow.errors import RegistryError
from onceflow.io import atomic_dir
from onceflow.package.manifest import MANIFEST, check_name, sha256_file, validate_manifest
from onceflow.registry.index import IndexEntry, select
from onceflow.registry.publish import read_entries
from onceflow.registry.store import Store, object_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullResult:
    target: str
    entry: IndexEntry
    dest: Path
    files: tuple[str, ...]


def list_targets(store: Store) -> list[str]:
    return store.list_dirs()


def load_entries(store: Store, target: str) -> list[IndexEntry]:
    """Entries of a target that must exist; an unknown target names the known ones."""
    check_name("target", target)
    entries, token = read_entries(store, target)
    if token is None:
        known = ", ".join(store.list_dirs()) or "none"
        raise RegistryError(f"unknown target {target!r} in {store.uri} (targets: {known})")
    return entries


def list_models(store: Store, target: str | None = None) -> dict[str, list[IndexEntry]]:
    """Entries per target (one target, or all), each sorted by latency."""
    targets = [target] if target is not None else list_targets(store)
    return {
        t: sorted(load_entries(store, t), key=lambda e: (e.latency_ms, e.model_id)) for t in targets
    }


def _check_file(path: Path, name: str, expected: dict, source: str) -> None:
    size, digest = path.stat().st_size, sha256_file(path)
    if size != expected["size"] or digest != expected["sha256"]:
        raise RegistryError(
            f"{source}/{name}: verification failed (sha256 {digest[:16]}…, {size} bytes; expected "
            f"{expected['sha256'][:16]}…, {expected['size']} bytes); the object is corrupt or was "
            "tampered with -- nothing was written to the destination"
        )


def _check_dest(dest: Path) -> None:
    """A destination is a new or empty directory, or a previous pull (which gets replaced)."""
    if dest.exists() and not dest.is_dir():
        raise RegistryError(f"--dest {dest}: exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise RegistryError(
            f"--dest {dest}: directory is not empty and holds no earlier pull; choose a new or "
            "empty directory"
        )


def pull_model(
    store: Store,
    target: str,
    dest: str | Path,
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    model_id: str | None = None,
) -> PullResult:
    """Choose a model (see ``index.select``), download it, verify it, place it at ``dest``."""
    dest = Path(dest)
    _check_dest(dest)
    entry = select(
        load_entries(store, target),
        target,
        max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy,
        model_id=model_id,
    )
    source = f"{store.uri}/{target}/{entry.model_id}"
    with atomic_dir(dest) as tmp:
        store.download(object_key(target, entry.model_id, MANIFEST), tmp / MANIFEST)
        _check_file(tmp / MANIFEST, MANIFEST, entry.files[MANIFEST], source)
        try:
            manifest = validate_manifest(
                json.loads((tmp / MANIFEST).read_bytes()), f"{source}/{MANIFEST}"
            )
        except json.JSONDecodeError:
            raise RegistryError(f"{source}/{MANIFEST}: not valid JSON") from None
        if (manifest["target"], manifest["model_id"]) != (target, entry.model_id):
            raise RegistryError(
                f"{source}/{MANIFEST}: names another model; the registry is corrupt"
            )
        for name, expected in manifest["files"].items():
            store.download(object_key(target, entry.model_id, name), tmp / name)
            _check_file(tmp / name, name, expected, source)
        files = (*manifest["files"], MANIFEST)
    log.info("pulled %s/%s into %s", target, entry.model_id, dest)
    return PullResult(target, entry, dest, tuple(files))
