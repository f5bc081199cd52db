"""Read side of the registry: list models, choose one, download and verify it.

A pull downloads into a staging directory inside the destination (``.onceflow-pull-<pid>.tmp``),
verifies the manifest against the index entry and every file against the manifest (sha256 and
size), and only then moves the files into place one rename each, the manifest last. Any
mismatch raises RegistryError and leaves the destination as it was. The destination must be a
new or empty directory, or an earlier pull (only files a pull writes); anything else is refused
unless ``force``, and even then only the files a pull writes are replaced, never others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from onceflow import artifacts
from onceflow.errors import RegistryError
from onceflow.io import sha256_file
from onceflow.package.manifest import (
    MANIFEST,
    PAYLOAD_FILES,
    check_name,
    validate_manifest,
)
from onceflow.registry.index import IndexEntry, select
from onceflow.registry.publish import read_entries
from onceflow.registry.store import Store, object_key

log = logging.getLogger(__name__)
PULLED_FILES = frozenset((*PAYLOAD_FILES, MANIFEST))
_STAGING = ".onceflow-pull-"


@dataclass(frozen=True)
class PullResult:
    target: str
    entry: IndexEntry
    dest: Path
    files: tuple[str, ...]


def list_targets(store: Store) -> list[str]:
    return store.list_dirs()


def load_entries(store: Store, target: str) -> list[IndexEntry]:
    """Entries of a target that must exist (oldest first); an unknown target names the known."""
    check_name("target", target)
    entries, token = read_entries(store, target)
    if token is None:
        known = ", ".join(store.list_dirs()) or "none"
        raise RegistryError(f"unknown target {target!r} in {store.uri} (targets: {known})")
    return entries


def list_models(
    store: Store, target: str | None = None, *, all_revisions: bool = False
) -> dict[str, list[IndexEntry]]:
    """Entries per target (one target, or all), each sorted by latency.

    Each model appears with its newest revision unless ``all_revisions``.
    """
    from onceflow.registry.index import latest

    targets = [target] if target is not None else list_targets(store)
    out = {}
    for t in targets:
        entries = load_entries(store, t)
        shown = entries if all_revisions else latest(entries)
        out[t] = sorted(shown, key=lambda e: (e.latency_ms, e.model_id))
    return out


def find_model(
    store: Store, model_id: str, target: str | None = None, revision: str | None = None
) -> tuple[str, IndexEntry]:
    """(target, entry) of a model id (its newest revision unless ``revision``)."""
    check_name("model id", model_id)
    targets = [target] if target is not None else list_targets(store)
    found = []
    for t in targets:
        entries = load_entries(store, t)
        if any(e.model_id == model_id for e in entries):
            found.append((t, select(entries, t, model_id=model_id, revision=revision)))
    if not found:
        where = f"target {target!r}" if target else f"any target ({', '.join(targets) or 'none'})"
        raise RegistryError(
            f"model {model_id!r} is not in {store.uri} for {where}; for a package that is not "
            "published, add --artifacts artifacts"
        )
    if len(found) > 1:
        raise RegistryError(
            f"model {model_id!r} is published for several targets "
            f"({', '.join(t for t, _ in found)}); pick one with --target"
        )
    return found[0]


def fetch_manifest(store: Store, target: str, entry: IndexEntry, dest: Path) -> dict:
    """Download the entry's manifest to ``dest``, verify it against the index, and parse it."""
    source = f"{store.uri}/{target}/{entry.label.replace('@', '/')}"
    store.download(object_key(target, entry.model_id, MANIFEST, revision=entry.revision), dest)
    _check_file(dest, MANIFEST, entry.files[MANIFEST], source)
    doc = artifacts.parse_json(
        dest.read_bytes(), f"{source}/{MANIFEST}", artifacts.REPUBLISH, error=RegistryError
    )
    manifest = validate_manifest(doc, f"{source}/{MANIFEST}")
    if (manifest["target"], manifest["model_id"]) != (target, entry.model_id):
        raise RegistryError(f"{source}/{MANIFEST}: names another model; the registry is corrupt")
    return manifest


def _check_file(path: Path, name: str, expected: dict, source: str) -> None:
    size, digest = path.stat().st_size, sha256_file(path)
    if size != expected["size"] or digest != expected["sha256"]:
        raise RegistryError(
            f"{source}/{name}: verification failed (sha256 {digest[:16]}…, {size} bytes; expected "
            f"{expected['sha256'][:16]}…, {expected['size']} bytes); the object is corrupt or was "
            "tampered with -- nothing was written to the destination"
        )


def _foreign_files(dest: Path) -> list[str]:
    """Names in ``dest`` that a pull would not have written (staging dirs excepted)."""
    return sorted(
        p.name
        for p in dest.iterdir()
        if not (p.name in PULLED_FILES and p.is_file()) and not p.name.startswith(_STAGING)
    )


def check_dest(dest: Path, *, force: bool = False) -> None:
    """A destination is a new or empty directory, or an earlier pull (replaced file by file).

    Anything else is refused unless ``force`` (which still replaces only pulled file names).
    """
    if dest.exists() and not dest.is_dir():
        raise RegistryError(f"--dest {dest}: exists and is not a directory; choose a directory")
    if not dest.is_dir():
        return
    for name in sorted(PULLED_FILES):
        if (dest / name).exists() and not (dest / name).is_file():
            raise RegistryError(
                f"--dest {dest}: {name} there is not a file; move it away or choose another folder"
            )
    foreign = _foreign_files(dest)
    earlier_pull = (dest / MANIFEST).is_file() and not foreign
    if force or earlier_pull or not any(dest.iterdir()):
        return
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    what = f"holds {shown}" if foreign else "holds model files but no manifest.json"
    raise RegistryError(
        f"--dest {dest}: directory is not empty and is not an earlier pull ({what}); choose a "
        "new or empty directory, or pass --force to write the model files there (other files "
        "are kept)"
    )


def _remove_stale_staging(dest: Path) -> None:
    for old in dest.glob(f"{_STAGING}*.tmp"):
        pid = old.name[len(_STAGING) : -len(".tmp")]
        if pid.isdigit() and _alive(int(pid)):
            continue
        if old.is_symlink() or not old.is_dir():
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
        log.info("removed %s, left by a killed pull", old)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != 0


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A staging dir inside ``dest`` (created if missing); removed on the way out.

    If ``dest`` did not exist and the pull fails, ``dest`` is removed too.
    """
    top = dest  # the highest folder this pull creates (removed again if it fails)
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(dest)
    tmp = dest / f"{_STAGING}{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.is_file():
        tmp.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(top, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def pull_model(
    store: Store,
    target: str,
    dest: str | Path,
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    force: bool = False,
) -> PullResult:
    """Choose a model (see ``index.select``), download it, verify it, place it in ``dest``."""
    dest = Path(os.path.abspath(dest))
    try:
        check_dest(dest, force=force)
        earlier = (dest / MANIFEST).is_file() and not _foreign_files(dest)
    except OSError as err:
        raise RegistryError(f"--dest {dest}: cannot read it ({err.strerror or err})") from None
    entry = select(
        load_entries(store, target),
        target,
        max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy,
        model_id=model_id,
        revision=revision,
    )
    try:
        files, replaced = _download_into(store, target, entry, dest, earlier)
    except OSError as err:
        raise RegistryError(
            f"--dest {dest}: cannot write there ({err.strerror or err}); choose another folder"
        ) from None
    if replaced:
        log.warning("--force: replaced %s in %s", ", ".join(replaced), dest)
    log.info("pulled %s/%s into %s", target, entry.label, dest)
    return PullResult(target, entry, dest, tuple(files))


def _download_into(
    store: Store, target: str, entry: IndexEntry, dest: Path, earlier: bool
) -> tuple[tuple[str, ...], list[str]]:
    """Download and verify ``entry`` in a staging dir, then move its files into ``dest``."""
    source = f"{store.uri}/{target}/{entry.label.replace('@', '/')}"
    with _staging(dest) as tmp:
        manifest = fetch_manifest(store, target, entry, tmp / MANIFEST)
        for name, expected in manifest["files"].items():
            key = object_key(target, entry.model_id, name, revision=entry.revision)
            store.download(key, tmp / name)
            _check_file(tmp / name, name, expected, source)
        files = (*manifest["files"], MANIFEST)
        replaced = [n for n in files if (dest / n).exists() and not earlier]
        with contextlib.suppress(FileNotFoundError):  # no stale manifest over new files
            (dest / MANIFEST).unlink()
        for name in files:  # payload first, the manifest last: it marks a complete pull
            os.replace(tmp / name, dest / name)
        if earlier:  # files of the earlier pull that this model lacks (e.g. a model.plan)
            for name in PULLED_FILES - set(files):
                with contextlib.suppress(FileNotFoundError):
                    (dest / name).unlink()
    return files, replaced
