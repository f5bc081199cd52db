"""Run identity includes the data: relabelled data of the same size retrains, never resumes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from onceflow.data.prepared import (
    SPLITS,
    content_hash,
    data_identity,
    load_prepared,
    save_split,
)
from onceflow.train.loop import train_supernet
from onceflow.train.resume import fingerprint, world_key
from tests.conftest import write_prepared
from tests.supernet.helpers import tiny_space
from tests.train.helpers import tiny_train


def _with_content_hash(directory: Path) -> str:
    """Write meta.json's content_sha256 as the prepare stage does; return it."""
    data = load_prepared(directory, mmap=False)
    digest = content_hash({n: data.split(n) for n in SPLITS}, data.meta)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "content_sha256": digest}))
    return digest


def _relabel(src: Path, dest: Path) -> Path:
    """A copy of ``src`` whose train labels are permuted: same size, same images."""
    data = load_prepared(src, mmap=False)
    dest.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for name in SPLITS:
        split = data.split(name)
        if name == "train":
            split = type(split)(split.images, rng.permutation(split.labels))
        save_split(dest, name, split)
    meta = json.loads((src / "meta.json").read_text())
    meta.pop("content_sha256", None)
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def test_relabelled_data_of_the_same_size_retrains(tmp_path: Path) -> None:
    first = write_prepared(tmp_path / "a", n_per_class=8)
    second = _relabel(first, tmp_path / "b")
    h1, h2 = _with_content_hash(first), _with_content_hash(second)
    assert h1 != h2 and len(h1) == 64
    space, cfg = tiny_space(), tiny_train(epoch_eval_images=0)
    ckpt = tmp_path / "ckpt"

    a = train_supernet(load_prepared(first), space, cfg, checkpoint_dir=ckpt, progress=False)
    assert a.completed and a.steps_run > 0
    again = train_supernet(load_prepared(first), space, cfg, checkpoint_dir=ckpt, progress=False)
    assert again.steps_run == 0  # same data: the finished run is resumed, not redone

    b = train_supernet(load_prepared(second), space, cfg, checkpoint_dir=ckpt, progress=False)
    assert b.completed and b.steps_run == a.steps_run  # really trained, from scratch
    assert len(list(ckpt.iterdir())) == 2  # its own identity folder beside the first run's
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_content_hash_sees_labels_pixels_and_normalization(tmp_path: Path) -> None:
    d = write_prepared(tmp_path / "p", n_per_class=4)
    data = load_prepared(d, mmap=False)
    splits = {n: data.split(n) for n in SPLITS}
    base = content_hash(splits, data.meta)
    assert content_hash(splits, data.meta) == base  # deterministic

    images = data.train.images.copy()
    images[0, 0, 0, 0] ^= 1  # one bit of one pixel
    changed = {**splits, "train": type(data.train)(images, data.train.labels)}
    assert content_hash(changed, data.meta) != base
    assert content_hash(splits, replace(data.meta, std=(0.31,))) != base
    assert content_hash(splits, replace(data.meta, source="other reader")) == base
    # a meta.json without the key (older prepared dirs, test fixtures): computed on load
    assert data_identity(data) == base
    assert (
        data_identity(replace(data, meta=replace(data.meta, content_sha256="x" * 64))) == "x" * 64
    )


def test_fingerprint_covers_what_changes_the_weights(tiny_prepared: Path) -> None:
    data, space, cfg = load_prepared(tiny_prepared), tiny_space(), tiny_train()
    fp = fingerprint(space, cfg, 0, data, 1)
    assert fingerprint(space, tiny_train(checkpoint_every_steps=7), 0, data, 1) == fp  # cadence
    other_data = replace(data, meta=replace(data.meta, content_sha256="0" * 64))
    changed = [
        fingerprint(space, tiny_train(n_random=2), 0, data, 1),
        fingerprint(space, cfg, 1, data, 1),
        fingerprint(space, cfg, 0, other_data, 1),
        fingerprint(space, cfg, 0, data, 2),
        fingerprint(space, cfg, 0, data, 1, device="cuda"),
    ]
    assert fp not in changed and len(set(changed)) == len(changed)
    # how the ranks are launched is not: 2 nodes x 1 rank train what 1 node x 2 ranks do
    launch = tiny_train(processes=2, nodes=2, max_restarts=3, rdzv_endpoint="10.0.0.5:29400")
    assert fingerprint(space, launch, 0, data, 2) == fingerprint(space, cfg, 0, data, 2)
    # an elastic job (a node range) keeps its identity when a lost or new node changes its ranks
    elastic = tiny_train(nodes="1:2")
    assert world_key(elastic, 1) == world_key(elastic, 2) == "elastic"
    assert world_key(cfg, 2) == 2
