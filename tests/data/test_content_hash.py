"""prepare writes meta.json `content_sha256` (a contract: registry lineage and resumable
outputs key on it); the same data gives the same hash, relabelled data another."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from onceflow.config import DataConfig
from onceflow.data.prepare import prepare_dataset
from onceflow.data.prepared import SPLITS, content_hash, load_prepared
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
