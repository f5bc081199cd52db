"""The read side on a file:// registry: listing, finding, verifying, the destination rules and
the staging directory, each message compared in full (targets of `make mutation` on pull.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onceflow.errors import RegistryError
from onceflow.io import sha256_file
from onceflow.package.manifest import MANIFEST, ONNX, PLAN, write_manifest
from onceflow.registry import open_store, publish_package
from onceflow.registry.pull import (
    _alive,
    _remove_stale_staging,
    _staging,
    check_dest,
    fetch_manifest,
    find_model,
    list_models,
    list_targets,
    load_entries,
    pull_model,
)
from onceflow.registry.store import object_key
from tests.registry.fixtures import make_package

T = "ort-cpu"


@pytest.fixture
def reg(tmp_path: Path):
    """A file:// registry with two models on ort-cpu (b has two revisions) and one on edge."""
    store = open_store(f"file://{tmp_path / 'reg'}")
    art = tmp_path / "art"
    publish_package(store, make_package(art / "1", T, "a", accuracy=0.7, latency_ms=1.0, seed=1))
    publish_package(store, make_package(art / "2", T, "b", accuracy=0.8, latency_ms=3.0, seed=2))
    publish_package(store, make_package(art / "3", T, "b", accuracy=0.8, latency_ms=2.0, seed=2))
    publish_package(store, make_package(art / "4", "edge", "c", accuracy=0.9, latency_ms=5, seed=3))
    return store


def _rev(store, target: str, mid: str) -> str:
    return [e for e in load_entries(store, target) if e.model_id == mid][-1].revision


# ------------------------------------------------------------------------------ listing
def test_list_and_load(reg) -> None:
    assert list_targets(reg) == ["edge", T]
    listed = list_models(reg, T)
    assert list(listed) == [T]
    assert [(e.model_id, e.latency_ms) for e in listed[T]] == [("a", 1.0), ("b", 2.0)]
    every = list_models(reg, T, all_revisions=True)[T]
    assert [(e.model_id, e.latency_ms) for e in every] == [("a", 1.0), ("b", 2.0), ("b", 3.0)]
    assert sorted(list_models(reg)) == ["edge", T]
    assert [e.model_id for e in list_models(reg)["edge"]] == ["c"]
    with pytest.raises(RegistryError) as err:
        load_entries(reg, "gpu")
    assert str(err.value) == f"unknown target 'gpu' in {reg.uri} (targets: edge, ort-cpu)"
    with pytest.raises(RegistryError, match="invalid target 'A/B'"):
        load_entries(reg, "A/B")


def test_list_models_breaks_latency_ties_by_id(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'reg'}")
    for mid, seed in (("z", 1), ("m", 2)):
        pkg = make_package(tmp_path / mid, T, mid, accuracy=0.5, latency_ms=1.0, seed=seed)
        publish_package(store, pkg)
    assert [e.model_id for e in list_models(store, T)[T]] == ["m", "z"]


def test_unknown_target_in_an_empty_registry(tmp_path: Path) -> None:
    (tmp_path / "reg").mkdir()
    store = open_store(f"file://{tmp_path / 'reg'}")
    with pytest.raises(RegistryError) as err:
        load_entries(store, T)
    assert str(err.value) == f"unknown target 'ort-cpu' in {store.uri} (targets: none)"


def test_find_model(reg) -> None:
    target, e = find_model(reg, "b")
    assert (target, e.model_id, e.latency_ms) == (T, "b", 2.0)
    older = [x for x in load_entries(reg, T) if x.model_id == "b"][0].revision
    assert find_model(reg, "b", T, revision=older)[1].latency_ms == 3.0
    assert find_model(reg, "c", "edge")[0] == "edge"
    with pytest.raises(RegistryError) as err:
        find_model(reg, "nope")
    assert str(err.value) == (
        f"model 'nope' is not in {reg.uri} for any target (edge, ort-cpu); for a package that "
        "is not published, add --artifacts artifacts"
    )
    with pytest.raises(RegistryError) as err:
        find_model(reg, "c", T)
    assert str(err.value) == (
        f"model 'c' is not in {reg.uri} for target 'ort-cpu'; for a package that is not "
        "published, add --artifacts artifacts"
    )
    with pytest.raises(RegistryError, match="invalid model id"):
        find_model(reg, "../c")


def test_find_model_on_several_targets(reg, tmp_path: Path) -> None:
    publish_package(reg, make_package(tmp_path / "x", "gpu", "a", accuracy=0.7, latency_ms=1))
    with pytest.raises(RegistryError) as err:
        find_model(reg, "a")
    assert str(err.value) == (
        "model 'a' is published for several targets (gpu, ort-cpu); pick one with --target"
    )


def test_find_model_in_a_registry_without_targets(tmp_path: Path) -> None:
    (tmp_path / "reg").mkdir()
    store = open_store(f"file://{tmp_path / 'reg'}")
    with pytest.raises(RegistryError, match=r"for any target \(none\)"):
        find_model(store, "a")


# ------------------------------------------------------------------------------ verification
def test_fetch_manifest_verifies_against_the_index(reg, tmp_path: Path) -> None:
    [entry] = [e for e in list_models(reg, T)[T] if e.model_id == "a"]
    got = fetch_manifest(reg, T, entry, tmp_path / "m.json")
    assert (got["model_id"], got["target"]) == ("a", T)
    key = object_key(T, "a", MANIFEST, revision=entry.revision)
    stored = reg.root / key
    good = stored.read_bytes()
    stored.write_bytes(good.replace(b'"a"', b'"A"'))  # same size, other bytes
    source = f"{reg.uri}/{T}/a/{entry.revision}"
    with pytest.raises(RegistryError) as err:
        fetch_manifest(reg, T, entry, tmp_path / "m2.json")
    digest = sha256_file(stored)
    assert str(err.value) == (
        f"{source}/{MANIFEST}: verification failed (sha256 {digest[:16]}…, {len(good)} bytes; "
        f"expected {entry.manifest_sha256[:16]}…, {len(good)} bytes); the object is corrupt or "
        "was tampered with -- nothing was written to the destination"
    )


def _forge(store, entry, data: bytes) -> None:
    """Store ``data`` as the entry's manifest and re-pin the index on it (a consistent lie)."""
    from onceflow.registry.index import render_index

    key = object_key(T, entry.model_id, MANIFEST, revision=entry.revision)
    (store.root / key).write_bytes(data)
    entries = load_entries(store, T)
    rec = {"sha256": sha256_file(store.root / key), "size": len(data)}
    fixed = [
        type(e)(**{**e.to_json(), "files": {**e.files, MANIFEST: rec}}) if e == entry else e
        for e in entries
    ]
    (store.root / T / "index.json").write_bytes(render_index(T, fixed))


def test_fetch_manifest_refuses_bad_json_and_another_models_manifest(reg, tmp_path: Path) -> None:
    [a] = [e for e in list_models(reg, T)[T] if e.model_id == "a"]
    source = f"{reg.uri}/{T}/a/{a.revision}/{MANIFEST}"
    _forge(reg, a, b"{not json")
    [a] = [e for e in list_models(reg, T)[T] if e.model_id == "a"]
    with pytest.raises(RegistryError) as err:
        fetch_manifest(reg, T, a, tmp_path / "1.json")
    assert str(err.value) == (
        f"{source}: not valid JSON (Expecting property name enclosed in double quotes at line 1 "
        "column 2: truncated or damaged); restore it from a backup or republish the packages "
        "(`onceflow publish`)"
    )
    other = json.loads((reg.root / object_key(T, "b", MANIFEST, revision=_rev(reg, T, "b")))
                       .read_bytes())  # fmt: skip
    for field, value in (("model_id", "b"), ("target", "edge")):
        data = json.loads(json.dumps(other))
        data["model_id"], data[field] = "a", value
        _forge(reg, a, json.dumps(data).encode())
        [a] = [e for e in list_models(reg, T)[T] if e.model_id == "a"]
        with pytest.raises(RegistryError) as err:
            fetch_manifest(reg, T, a, tmp_path / f"{field}.json")
        assert str(err.value) == f"{source}: names another model; the registry is corrupt"


def test_a_payload_file_of_another_size_is_refused(reg, tmp_path: Path) -> None:
    [a] = [e for e in list_models(reg, T)[T] if e.model_id == "a"]
    onnx = reg.root / object_key(T, "a", ONNX, revision=a.revision)
    onnx.write_bytes(onnx.read_bytes() + b"x")
    with pytest.raises(RegistryError, match=r"model.onnx: verification failed .* 4097 bytes; "
                                            r"expected .* 4096 bytes\)"):  # fmt: skip
        pull_model(reg, T, tmp_path / "d", model_id="a")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------ destination
def test_check_dest_rules(tmp_path: Path) -> None:
    check_dest(tmp_path / "new")  # missing: fine
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RegistryError) as err:
        check_dest(f)
    assert str(err.value) == f"--dest {f}: exists and is not a directory; choose a directory"
    d = tmp_path / "d"
    d.mkdir()
    check_dest(d)  # empty: fine
    (d / ONNX).mkdir()
    with pytest.raises(RegistryError) as err:
        check_dest(d, force=True)
    assert str(err.value) == (
        f"--dest {d}: model.onnx there is not a file; move it away or choose another folder"
    )
    (d / ONNX).rmdir()
    (d / ONNX).write_text("x")
    with pytest.raises(RegistryError) as err:
        check_dest(d)
    assert str(err.value) == (
        f"--dest {d}: directory is not empty and is not an earlier pull (holds model files but "
        "no manifest.json); choose a new or empty directory, or pass --force to write the model "
        "files there (other files are kept)"
    )
    (d / MANIFEST).write_text("{}")
    (d / ".onceflow-pull-1.tmp").mkdir()  # a staging dir is not foreign
    check_dest(d)  # an earlier pull
    for name in ("c", "a", "b"):
        (d / name).write_text("x")
    with pytest.raises(RegistryError, match=r"\(holds a, b, c\); choose"):
        check_dest(d)
    (d / "d").mkdir()
    with pytest.raises(RegistryError, match=r"\(holds a, b, c and 1 more\); choose"):
        check_dest(d)
    check_dest(d, force=True)


def test_stale_staging_is_removed_unless_its_pull_is_alive(tmp_path: Path, caplog) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    live = tmp_path / f".onceflow-pull-{os.getppid()}.tmp"
    stale = [tmp_path / f".onceflow-pull-{dead}.tmp", tmp_path / ".onceflow-pull-x1.tmp"]
    for p in (live, *stale):
        p.mkdir()
        (p / "f").write_text("x")
    as_file = tmp_path / ".onceflow-pull-7x.tmp"
    as_file.write_text("x")
    link = tmp_path / ".onceflow-pull-8y.tmp"
    link.symlink_to(live)
    other = tmp_path / "keep.tmp"
    other.mkdir()
    with caplog.at_level(logging.INFO, logger="onceflow.registry.pull"):
        _remove_stale_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "keep.tmp"])
    assert (live / "f").exists()
    assert f"removed {stale[0]}, left by a killed pull" in caplog.text


def test_alive() -> None:
    assert _alive(os.getpid()) and _alive(os.getppid())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert not _alive(int(dead))
    assert not _alive(0)


def test_staging_cleans_up_and_removes_what_a_failed_pull_created(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "dest"
    with _staging(dest) as tmp:
        assert tmp == dest / f".onceflow-pull-{os.getpid()}.tmp" and tmp.is_dir()
        (tmp / "f").write_text("x")
    assert dest.is_dir() and list(dest.iterdir()) == []
    with pytest.raises(KeyError), _staging(tmp_path / "x" / "y" / "dest"):
        raise KeyError("boom")
    assert not (tmp_path / "x").exists()  # the highest folder it created went too
    with pytest.raises(KeyError), _staging(dest) as tmp:
        raise KeyError("boom")
    assert dest.is_dir() and not tmp.exists()  # an existing dest stays
    leftover = dest / f".onceflow-pull-{os.getpid()}.tmp"
    leftover.write_text("a file where the staging dir goes")
    with _staging(dest) as tmp:
        assert tmp.is_dir()
    (dest / f".onceflow-pull-{os.getpid()}.tmp").mkdir()
    (dest / f".onceflow-pull-{os.getpid()}.tmp" / "old").write_text("x")
    with _staging(dest) as tmp:
        assert list(tmp.iterdir()) == []


# ------------------------------------------------------------------------------ pull
def test_pull_places_files_and_replaces_an_earlier_pull(reg, tmp_path: Path, caplog) -> None:
    dest = tmp_path / "d"
    got = pull_model(reg, T, str(dest), max_latency_ms=1.5)
    assert (got.target, got.entry.model_id, got.dest, got.files) == (
        T, "a", dest, ("model.onnx", "README.md", MANIFEST),
    )  # fmt: skip
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", MANIFEST, "model.onnx"]
    (dest / PLAN).write_text("a plan of an earlier model")
    with caplog.at_level(logging.INFO, logger="onceflow.registry.pull"):
        again = pull_model(reg, T, dest, model_id="b")
    assert again.entry.model_id == "b" and not (dest / PLAN).exists()
    assert "--force" not in caplog.text
    assert f"pulled {T}/{again.entry.label} into {dest}" in caplog.text
    man = json.loads((dest / MANIFEST).read_bytes())
    assert man["model_id"] == "b" and sha256_file(dest / ONNX) == again.entry.onnx_sha256


def test_force_replaces_only_pulled_names_and_says_so(reg, tmp_path: Path, caplog) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    (dest / ONNX).write_text("old")
    (dest / PLAN).write_text("kept: not part of this model")
    with pytest.raises(RegistryError, match="not an earlier pull"):
        pull_model(reg, T, dest, model_id="a")
    with caplog.at_level(logging.WARNING, logger="onceflow.registry.pull"):
        pull_model(reg, T, dest, model_id="a", force=True)
    assert f"--force: replaced model.onnx in {dest}" in caplog.text
    assert (dest / "notes.txt").read_text() == "mine" and (dest / PLAN).exists()


def test_pull_into_a_place_it_cannot_write(reg, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    dest = blocker / "sub"
    with pytest.raises(RegistryError) as err:
        pull_model(reg, T, dest, model_id="a")
    assert (
        str(err.value)
        == f"--dest {dest}: cannot write there (Not a directory); choose another folder"
    )
    assert blocker.read_text() == "x"


def test_a_manifest_that_lists_a_plan(reg, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "p", T, "withplan", accuracy=0.6, latency_ms=0.5, seed=9)
    (pkg / PLAN).write_bytes(b"engine")
    man = json.loads((pkg / MANIFEST).read_text())
    write_manifest(pkg, {k: v for k, v in man.items() if k != "files"})  # now lists the plan
    publish_package(reg, pkg)
    got = pull_model(reg, T, tmp_path / "d", model_id="withplan")
    assert PLAN in got.files and (tmp_path / "d" / PLAN).read_bytes() == b"engine"
