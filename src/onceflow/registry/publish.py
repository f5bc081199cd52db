"""Publish packages: immutable objects first, then the index by compare-and-swap.

Order is what makes publishing safe to interrupt and to run concurrently:
1. verify the local package against its manifest (never publish a damaged package);
2. upload its files (payload first, manifest last) under ``<target>/<model-id>/<revision>/``,
   where the revision is derived from the manifest's sha256: two publishers of different
   manifests write to different keys, two of the same manifest write the same bytes. Until the
   index names the revision these objects are invisible to readers;
3. read ``<target>/index.json`` with its version, append the revision, write it back only if
   the version is unchanged (S3 ``If-Match``/``If-None-Match``; a lock + rename for
   ``file://``). On a conflict re-read and retry with jittered exponential backoff, so two
   publishers at once both land their revisions.
A crash before step 3 leaves the index as it was; rerunning re-uploads only what is missing and
then adds the entry. Publishing a package whose revision is already indexed verifies the stored
objects (their real sha256) and re-uploads any that are missing or corrupt ("repaired").
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceflow.config import PublishConfig
from onceflow.errors import RegistryError
from onceflow.metrics import publish_headline
from onceflow.package.manifest import (
    MANIFEST,
    PAYLOAD_FILES,
    file_entry,
    load_manifest,
    verify_files,
)
from onceflow.registry.index import (
    IndexEntry,
    add_revision,
    entry_from_manifest,
    find_revision,
    parse_index,
    render_index,
)
from onceflow.registry.store import (
    INDEX,
    IndexConflict,
    Store,
    object_key,
    open_store,
    resolve_registry,
)

log = logging.getLogger(__name__)

# Index compare-and-swap retries when no config is at hand (the schema's default).
CONFLICT_RETRIES: int = PublishConfig.model_fields["conflict_retries"].default


@dataclass(frozen=True)
class PublishResult:
    target: str
    model_id: str
    # "published" (a new revision is indexed), "unchanged" (already there, verified, nothing
    # written) or "repaired" (already indexed; missing or corrupt objects were re-uploaded)
    status: str
    uploaded: tuple[str, ...]  # file names actually uploaded
    revision: str | None
    uri: str  # where the revision's objects live (display form, no credentials)


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
    retries: int = CONFLICT_RETRIES,
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


def _upload_to(
    store: Store, target: str, root: Path, entry: IndexEntry, names: list[str], *, repair: bool
) -> list[str]:
    """Upload the files of ``entry`` whose stored objects are missing or differ; their names.

    The stored bytes are hashed (not trusted from metadata). ``repair``: the revision is
    already indexed, so a missing or differing object is damage and is logged as such.
    """
    uploaded = []
    for name in names:
        sha = entry.files[name]["sha256"]
        key = object_key(target, entry.model_id, name, revision=entry.revision)
        stored = store.stored_sha256(key)
        if stored == sha:
            continue  # left by an interrupted earlier publish, or a concurrent identical one
        if repair or stored is not None:
            log.warning(
                "%s/%s is %s; re-uploading it from %s",
                store.uri,
                key,
                "missing" if stored is None else "corrupt (its sha256 differs)",
                root / name,
            )
        store.put_file(key, root / name, sha)
        uploaded.append(name)
    return uploaded


def publish_package(
    store: Store, package_dir: str | Path, *, retries: int = CONFLICT_RETRIES
) -> PublishResult:
    """Upload one package directory (``<model-id>/`` with manifest.json) and index it."""
    root = Path(package_dir)
    manifest = load_manifest(root)
    verify_files(root, manifest)
    target, mid = manifest["target"], manifest["model_id"]
    if root.name != mid:
        raise RegistryError(f"{root}: directory name differs from the manifest's model_id {mid!r}")
    entry = entry_from_manifest(manifest, file_entry(root / MANIFEST))
    names = [*[n for n in PAYLOAD_FILES if n in manifest["files"]], MANIFEST]

    def where(e: IndexEntry) -> str:
        return f"{store.uri}/{target}/{mid}" + (f"/{e.revision}" if e.revision else "")

    entries, _ = read_entries(store, target)
    stored = find_revision(entries, entry)
    if stored is not None:  # this very manifest is indexed: check what is stored, repair it
        fixed = _upload_to(store, target, root, stored, names, repair=True)
        status = "repaired" if fixed else "unchanged"
        log.info("%s/%s is already published (%s): %s", target, stored.label, where(stored), status)
        return PublishResult(target, mid, status, tuple(fixed), stored.revision, where(stored))

    uploaded = _upload_to(store, target, root, entry, names, repair=False)
    log.info("uploaded %s/%s: %s", target, entry.label, ", ".join(uploaded) or "(all there)")
    changed = update_index(
        store, target, lambda current: add_revision(current, entry), retries=retries
    )
    earlier = [e for e in entries if e.model_id == mid]
    if changed and earlier:
        prev = earlier[-1]
        log.warning(
            "%s/%s: published a new revision %s (previous %s: latency %.4f -> %.4f ms, accuracy "
            "%.4f -> %.4f%s); pull takes the newest, --revision picks an older one",
            target,
            mid,
            entry.revision,
            prev.revision or "format-1 entry",
            prev.latency_ms,
            entry.latency_ms,
            prev.test_accuracy,
            entry.test_accuracy,
            "" if prev.onnx_sha256 == entry.onnx_sha256 else "; the ONNX differs too",
        )
    status = "published" if changed else "unchanged"
    log.info("%s %s/%s to %s", status, target, entry.label, store.uri)
    return PublishResult(target, mid, status, tuple(uploaded), entry.revision, where(entry))


def find_packages(artifacts: str | Path) -> list[Path]:
    """Package directories under ``artifacts/<target>/<model-id>/`` (those with a manifest)."""
    root = Path(artifacts)
    if not root.is_dir():
        raise RegistryError(f"{root}: no artifacts directory (run `dvc repro package` first)")
    return sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))


def publish_all(
    store: Store, artifacts: str | Path, *, retries: int = CONFLICT_RETRIES
) -> list[PublishResult]:
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


@dataclass(frozen=True)
class PublishRun:
    """What the ``publish`` stage reports: the registry and every package's outcome."""

    registry: str  # display URI, no credentials
    results: list[PublishResult]

    @property
    def details(self) -> dict[str, Any]:
        """metrics/publish.details.json: counts by status and one entry per package."""
        results = self.results
        return {
            "registry": self.registry,
            "n_packages": len(results),
            "n_published": sum(r.status == "published" for r in results),
            "n_unchanged": sum(r.status == "unchanged" for r in results),
            "n_repaired": sum(r.status == "repaired" for r in results),
            "packages": [
                {"target": r.target, "model_id": r.model_id, "revision": r.revision, "uri": r.uri,
                 "status": r.status, "uploaded": list(r.uploaded)}
                for r in results
            ],
        }  # fmt: skip

    @property
    def headline(self) -> dict[str, Any]:
        return publish_headline(self.details)

    @property
    def summary(self) -> str:
        return f"publish to {self.registry}: {len(self.results)} package(s)"


def run_publish(cfg: PublishConfig, artifacts: str | Path) -> PublishRun:
    """The ``publish`` stage: open the registry ``cfg.uri`` and publish every package under
    ``artifacts`` (:func:`publish_all`)."""
    store = open_store(resolve_registry(cfg.uri), cfg)
    return PublishRun(store.uri, publish_all(store, artifacts, retries=cfg.conflict_retries))
