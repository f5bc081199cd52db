"""Publish packages: files first, then the index by compare-and-swap.

Order is what makes publishing safe to interrupt and to run concurrently:
1. verify the local package against its manifest (never publish a damaged package);
2. upload its files (payload first, manifest last), skipping objects already stored with the
   same sha256 -- until the index names the model, these objects are invisible to readers;
3. read ``<target>/index.json`` with its version, add the entry, write it back only if the
   version is unchanged (S3 ``If-Match``/``If-None-Match``; a lock + rename for ``file://``).
   On a conflict re-read and retry with jittered exponential backoff, so two publishers at once
   both land their entries.
A crash before step 3 leaves the index as it was; rerunning re-uploads only what is missing and
then adds the entry. Publishing an already-published, identical package writes nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from onceflow.errors import RegistryError
from onceflow.package.manifest import (
    MANIFEST,
    PAYLOAD_FILES,
    file_entry,
    load_manifest,
    verify_files,
)
from onceflow.registry.index import (
    IndexEntry,
    add_entry,
    entry_from_manifest,
    parse_index,
    render_index,
)
from onceflow.registry.store import INDEX, IndexConflict, Store, object_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishResult:
    target: str
    model_id: str
    status: str  # "published" (index updated) or "unchanged" (already there, nothing written)
    uploaded: tuple[str, ...]  # file names actually uploaded


def read_entries(store: Store, target: str) -> tuple[list[IndexEntry], str | None]:
    """The target's index entries and the index version token (None if there is no index)."""
    key = object_key(target, INDEX)
    got = store.read(key)
    if got is None:
        return [], None
    return parse_index(got[0], target, f"{store.uri}/{key}"), got[1]


def update_index(
    store: Store,
    target: str,
    change: Callable[[list[IndexEntry]], list[IndexEntry] | None],
    *,
    retries: int = 10,
    backoff_s: float = 0.05,
    rng: random.Random | None = None,
) -> bool:
    """Apply ``change`` to the index by compare-and-swap; False if it had nothing to change.

    ``change`` maps the current entries to new ones (None: no change needed). It is re-applied
    to fresh entries after every lost race.
    """
    rng = rng or random.Random()
    key = object_key(target, INDEX)
    for attempt in range(retries + 1):
        entries, token = read_entries(store, target)
        new = change(entries)
        if new is None:
            return False
        try:
            store.put_if(key, render_index(target, new), token)
            return True
        except IndexConflict:
            delay = min(2.0, backoff_s * 2**attempt) * (0.5 + rng.random())
            log.info(
                "index %s/%s changed concurrently; retry %d in %.2fs",
                store.uri,
                key,
                attempt + 1,
                delay,
            )
            time.sleep(delay)
    raise RegistryError(
        f"{store.uri}/{key}: the index kept changing during {retries} retries (many concurrent "
        "publishers?); rerun publish -- it resumes where it stopped"
    )


def publish_package(store: Store, package_dir: str | Path, *, retries: int = 10) -> PublishResult:
    """Upload one package directory (``<model-id>/`` with manifest.json) and index it."""
    root = Path(package_dir)
    manifest = load_manifest(root)
    verify_files(root, manifest)
    target, mid = manifest["target"], manifest["model_id"]
    if root.name != mid:
        raise RegistryError(f"{root}: directory name differs from the manifest's model_id {mid!r}")
    entry = entry_from_manifest(manifest, file_entry(root / MANIFEST))

    entries, _ = read_entries(store, target)
    if add_entry(entries, entry) is None:  # raises if the id is taken by another ONNX
        old = next(e for e in entries if e.model_id == mid)
        if old.files[MANIFEST]["sha256"] == entry.files[MANIFEST]["sha256"]:
            log.info("%s/%s is already published, identical: nothing to do", target, mid)
        else:  # same model rebuilt, e.g. its latency measured again: the first record stands
            log.warning(
                "%s/%s is already published with the same ONNX but another manifest (published "
                "latency %.4f ms, this build %.4f ms); published entries are immutable, keeping "
                "the published one",
                target,
                mid,
                old.latency_ms,
                entry.latency_ms,
            )
        return PublishResult(target, mid, "unchanged", ())

    uploaded = []
    for name in (*[n for n in PAYLOAD_FILES if n in manifest["files"]], MANIFEST):
        sha = entry.files[name]["sha256"]
        key = object_key(target, mid, name)
        if store.stored_sha256(key) == sha:
            continue  # left by an interrupted earlier publish, or shared: already correct
        store.put_file(key, root / name, sha)
        uploaded.append(name)
    log.info("uploaded %s/%s: %s", target, mid, ", ".join(uploaded) or "(all files already there)")

    changed = update_index(
        store, target, lambda current: add_entry(current, entry), retries=retries
    )
    status = "published" if changed else "unchanged"
    log.info("%s %s/%s to %s", status, target, mid, store.uri)
    return PublishResult(target, mid, status, tuple(uploaded))


def find_packages(artifacts: str | Path) -> list[Path]:
    """Package directories under ``artifacts/<target>/<model-id>/`` (those with a manifest)."""
    root = Path(artifacts)
    if not root.is_dir():
        raise RegistryError(f"{root}: no artifacts directory (run `dvc repro package` first)")
    return sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))


def publish_all(store: Store, artifacts: str | Path, *, retries: int = 10) -> list[PublishResult]:
    """Publish every package under ``artifacts``; the target is checked against its folder."""
    results = []
    for pkg in find_packages(artifacts):
        manifest = load_manifest(pkg)
        if pkg.parent.name != manifest["target"]:
            raise RegistryError(
                f"{pkg}: manifest target {manifest['target']!r} differs from its folder "
                f"{pkg.parent.name!r}"
            )
        results.append(publish_package(store, pkg, retries=retries))
    return results
