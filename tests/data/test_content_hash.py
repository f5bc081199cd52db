"""prepare writes meta.json `content_sha256` (a contract: registry lineage and resumable
outputs key on it); the same data gives the same hash, relabelled data another."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from onceflow.config import DataConfig
from onceflow.data.prepare import prepare_dataset
from onceflow.data.prepared import SPLITS, Meta, Split, content_hash, load_prepared
from tests.data.conftest import write_idx_dataset


def _prepare(src: Path, out: Path) -> dict:
    result = prepare_dataset(DataConfig(path=str(src), val_fraction=0.2), seed=0)
    out.mkdir(parents=True)
    result.save(out)
    return json.loads((out / "meta.json").read_text())


def test_prepare_writes_the_content_hash(tmp_path: Path) -> None:
    src = write_idx_dataset(tmp_path / "src")
    meta = _prepare(src, tmp_path / "a")
    data = load_prepared(tmp_path / "a")
    assert meta["content_sha256"] == content_hash({n: data.split(n) for n in SPLITS}, data.meta)
    assert _prepare(src, tmp_path / "b")["content_sha256"] == meta["content_sha256"]

    # relabel: swap two training labels' bytes in the gzipped IDX source (same size)
    labels = src / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    i = next(k for k in range(9, len(raw)) if raw[k] != raw[8])
    raw[8], raw[i] = raw[i], raw[8]
    labels.write_bytes(gzip.compress(bytes(raw)))
    relabelled = _prepare(src, tmp_path / "c")
    assert relabelled["counts"] == meta["counts"]
    assert relabelled["content_sha256"] != meta["content_sha256"]


# One 1x1 grayscale image per split: the hash of these known bytes, written out by hand from the
# documented layout (meta JSON without source/counts/hash, then per split "<name>/images/|u1/
# <shape>" + pixels and "<name>/labels/<i8/<shape>" + labels) and pinned. A change to what the
# hash covers changes it and must be deliberate: checkpoints and registry lineage key on it.
KNOWN = {"train": (7, 1), "val": (8, 0), "test": (9, 1)}
KNOWN_SHA256 = "bfc4aeafdb22d3e464927f302634a80aa944d37f5d31dfd1381c332f13d3971d"


def _known(source: str = "idx", labels: dict | None = None) -> tuple[dict, Meta]:
    import numpy as np

    got = {**KNOWN, **(labels or {})}
    splits = {
        n: Split(np.array([[[[px]]]], np.uint8), np.array([lab], np.int64))
        for n, (px, lab) in got.items()
    }
    meta = Meta(("a", "b"), 1, 1, 1, (0.5,), (0.25,), source, {"train": 1, "val": 1, "test": 1})
    return splits, meta


def test_content_hash_of_known_bytes() -> None:
    import hashlib

    h = hashlib.sha256(
        b'{"channels": 1, "classes": ["a", "b"], "format_version": 1, "height": 1, '
        b'"mean": [0.5], "std": [0.25], "width": 1}'
    )
    for name, (px, label) in KNOWN.items():
        h.update(f"{name}/images/|u1/(1, 1, 1, 1)".encode() + bytes([px]))
        h.update(f"{name}/labels/<i8/(1,)".encode() + label.to_bytes(8, "little"))
    assert h.hexdigest() == KNOWN_SHA256
    assert content_hash(*_known()) == KNOWN_SHA256
    assert content_hash(*_known(source="another reader")) == KNOWN_SHA256
    assert content_hash(*_known(labels={"val": (8, 1)})) != KNOWN_SHA256
