"""Immutable revisions: the publisher race on both stores, format-1 registries, stale temp
files, and what a pull does to its destination."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from onceflow.errors import RegistryError
from onceflow.package.manifest import CARD, MANIFEST, ONNX, file_entry
from onceflow.registry import list_models, open_store, publish_package, pull_model, select
from onceflow.registry.index import entry_from_manifest
from onceflow.registry.local import remove_stale_temps
from onceflow.registry.pull import load_entries
from onceflow.registry.store import INDEX, IndexConflict, object_key
from tests.registry.fixtures import make_package

T = "ort-cpu"


def _racing_publish(
    uri: str, pkg: Path, barriers: tuple[threading.Barrier, threading.Barrier], conflicts: list
) -> object:
    """Publish with a store that makes the two publishers move in lock step: both read the
    index before either writes anything (objects or index), and both attempt their index
    write with the version they read before either has written it."""
    store = open_store(uri)
    read, put_if, waited = store.read, store.put_if, set()

    def read_then_wait(key: str):
        got = read(key)
        if key.endswith(INDEX) and "read" not in waited:
            waited.add("read")
            barriers[0].wait()  # both have read the index; neither has written anything
        return got

    def wait_then_put_if(*args):
        if "write" not in waited:
            waited.add("write")
            barriers[1].wait()  # both hold the same index version; neither has written it
        try:
            return put_if(*args)
        except IndexConflict:
            conflicts.append(pkg)
            raise

    store.read, store.put_if = read_then_wait, wait_then_put_if  # type: ignore[method-assign]
    return publish_package(store, pkg, retries=20)


def _barriers() -> tuple[threading.Barrier, threading.Barrier]:
    return threading.Barrier(2, timeout=60), threading.Barrier(2, timeout=60)


def test_race_two_manifests_of_one_model_both_land(registry_uri: str, tmp_path: Path) -> None:
    """Two publishers of one model id (same ONNX, re-measured latency) read the index before
    either writes. Before revisions they shared the manifest key, and the index could pin one
    manifest while the other's bytes sat under it (unpullable). Now both revisions land and
    each pulls byte for byte."""
    a = make_package(tmp_path / "a", T, "r28-aaaa", accuracy=0.8, latency_ms=1.0)
    b = make_package(tmp_path / "b", T, "r28-aaaa", accuracy=0.8, latency_ms=1.7)
    assert (a / ONNX).read_bytes() == (b / ONNX).read_bytes()
    barriers, conflicts = _barriers(), []
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(_racing_publish, registry_uri, p, barriers, conflicts) for p in (a, b)
        ]
        results = [f.result() for f in futures]
    assert [r.status for r in results] == ["published", "published"]
    assert len(conflicts) == 1  # the index writes really raced (and the loser retried)
    store = open_store(registry_uri)
    entries = load_entries(store, T)
    assert sorted(e.revision for e in entries) == sorted(r.revision for r in results)
    for pkg, res in zip((a, b), results, strict=True):
        dest = tmp_path / "pulled" / res.revision
        pull_model(store, T, dest, model_id="r28-aaaa", revision=res.revision)
        for name in (ONNX, CARD, MANIFEST):
            assert (dest / name).read_bytes() == (pkg / name).read_bytes()


def test_race_of_identical_packages_indexes_one_revision(registry_uri: str, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "a", T, "r28-aaaa", accuracy=0.8, latency_ms=1.0)
    barriers, conflicts = _barriers(), []
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(_racing_publish, registry_uri, pkg, barriers, conflicts)]
        futures.append(pool.submit(_racing_publish, registry_uri, pkg, barriers, conflicts))
        statuses = sorted(f.result().status for f in futures)
    assert statuses == ["published", "unchanged"] and len(conflicts) == 1
    store = open_store(registry_uri)
    assert len(load_entries(store, T)) == 1
    pull_model(store, T, tmp_path / "d", model_id="r28-aaaa")


def _write_format1_registry(store, pkg: Path) -> None:
    """A registry as onceflow wrote it before revisions: files under <target>/<id>/."""
    manifest = json.loads((pkg / MANIFEST).read_text())
    for name in (ONNX, CARD, MANIFEST):
        store.put_file(object_key(T, pkg.name, name), pkg / name, file_entry(pkg / name)["sha256"])
    entry = entry_from_manifest(manifest, file_entry(pkg / MANIFEST)).to_json()
    del entry["revision"]
    doc = {"format_version": 1, "target": T, "models": [entry]}
    store.put_if(object_key(T, INDEX), json.dumps(doc).encode(), None)


def test_format1_registry_stays_readable_and_is_upgraded(registry_uri: str, tmp_path: Path) -> None:
    store = open_store(registry_uri)
    old = make_package(tmp_path / "art", T, "r24-old0", accuracy=0.7, latency_ms=0.5, seed=1)
    _write_format1_registry(store, old)
    [entry] = list_models(store, T)[T]
    assert (entry.model_id, entry.revision) == ("r24-old0", None)
    pull_model(store, T, tmp_path / "d1", max_latency_ms=1.0)
    assert (tmp_path / "d1" / ONNX).read_bytes() == (old / ONNX).read_bytes()
    assert publish_package(store, old).status == "unchanged"  # verified at its format-1 keys

    new = make_package(tmp_path / "art", T, "r28-new0", accuracy=0.9, latency_ms=2.0, seed=2)
    assert publish_package(store, new).status == "published"
    doc = json.loads(store.read(object_key(T, INDEX))[0])
    assert doc["format_version"] == 2
    assert [m["revision"] for m in doc["models"]][0] is None
    assert pull_model(store, T, tmp_path / "d2", model_id="r24-old0").entry.revision is None
    assert pull_model(store, T, tmp_path / "d3", max_latency_ms=5).entry.model_id == "r28-new0"


def test_min_accuracy_alone_picks_the_fastest_that_meets_it(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'reg'}")
    art = tmp_path / "art"
    for i, (acc, lat) in enumerate([(0.80, 1.0), (0.86, 2.0), (0.90, 4.0), (0.88, 3.0)]):
        publish_package(
            store, make_package(art, T, f"r2{i}-m", accuracy=acc, latency_ms=lat, seed=i)
        )
    entries = load_entries(store, T)
    assert select(entries, T, min_accuracy=0.85).model_id == "r21-m"
    assert select(entries, T, min_accuracy=0.87).model_id == "r23-m"
    assert select(entries, T, max_latency_ms=3.5).model_id == "r23-m"  # most accurate in budget
    with pytest.raises(RegistryError, match=r"most accurate r22-m at 0\.9000"):
        select(entries, T, min_accuracy=0.95)


def test_killed_upload_temp_files_are_removed_by_the_next_write(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'reg'}")
    pkg = make_package(tmp_path / "art", T, "r28-aaaa", accuracy=0.8, latency_ms=1.0)
    rev = entry_from_manifest(json.loads((pkg / MANIFEST).read_text()), file_entry(pkg / MANIFEST))
    objdir = tmp_path / "reg" / T / "r28-aaaa" / str(rev.revision)
    objdir.mkdir(parents=True)
    stale = objdir / f".{ONNX}.0123456789ab.tmp"  # what a killed upload leaves behind
    stale.write_bytes(b"half an upload")
    live = objdir / f".{ONNX}.ba9876543210.tmp"  # another writer, still at work
    live.write_bytes(b"in progress")
    (tmp_path / "reg" / T).mkdir(exist_ok=True)
    stale_index = tmp_path / "reg" / T / f".{INDEX}.00aa11bb22cc.tmp"
    stale_index.write_bytes(b"{")
    for p in (stale, live, stale_index):
        os.utime(p, (1.0e9, 1.0e9))
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert publish_package(store, pkg).status == "published"
        assert not stale.exists() and not stale_index.exists()
        assert live.exists()  # locked by a live writer: kept
    assert remove_stale_temps(objdir / ONNX) == [live]  # its writer is gone now
    assert sorted(p.name for p in objdir.iterdir()) == sorted([ONNX, CARD, MANIFEST])


def test_pull_destinations(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'reg'}")
    publish_package(
        store, make_package(tmp_path / "art", T, "r28-aaaa", accuracy=0.8, latency_ms=1.0)
    )
    # A folder holding a user's file: refused, the file untouched; --force keeps it too.
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(RegistryError, match=r"not an earlier pull \(holds notes\.txt\).*--force"):
        pull_model(store, T, dest, max_latency_ms=5)
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    pull_model(store, T, dest, max_latency_ms=5, force=True)
    assert sorted(p.name for p in dest.iterdir()) == sorted(["notes.txt", ONNX, CARD, MANIFEST])
    assert (dest / "notes.txt").read_text() == "mine"

    # A staging dir left by a killed pull (its process is gone) is removed by the next pull.
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = tmp_path / "again" / f".onceflow-pull-{gone.pid}.tmp"
    left.mkdir(parents=True)
    (left / ONNX).write_bytes(b"partial")
    (tmp_path / "again" / MANIFEST).write_text("{}")  # an earlier pull's manifest
    pull_model(store, T, tmp_path / "again", max_latency_ms=5)
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted([ONNX, CARD, MANIFEST])

    # A planted symlink where the staging dir goes is removed, never followed.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (tmp_path / "again" / f".onceflow-pull-{os.getpid()}.tmp").symlink_to(elsewhere)
    pull_model(store, T, tmp_path / "again", max_latency_ms=5)
    assert (elsewhere / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted([ONNX, CARD, MANIFEST])

    # A failed pull into a new directory (and its new parents) leaves nothing behind.
    [stored] = (tmp_path / "reg" / T / "r28-aaaa").glob(f"*/{ONNX}")
    stored.write_bytes(b"tampered")  # fails verification inside the staging dir
    with pytest.raises(RegistryError, match="verification failed"):
        pull_model(store, T, tmp_path / "a" / "b" / "new", max_latency_ms=5)
    assert not (tmp_path / "a").exists()
    with pytest.raises(RegistryError):
        pull_model(store, T, tmp_path / "new", max_latency_ms=0.1)
    assert not (tmp_path / "new").exists()
