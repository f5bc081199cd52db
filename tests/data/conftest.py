"""Writers for small source datasets in each supported format."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import synthetic_images


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx_dataset(d: Path, n_train_per_class: int = 20, n_test_per_class: int = 5) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, k, seed in (("train", n_train_per_class, 1), ("t10k", n_test_per_class, 2)):
        x, y = synthetic_images(k, seed=seed)
        (d / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x[..., 0])))
        (d / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(y.astype(np.uint8)))
        )
    return d


def write_cifar_dataset(d: Path, per_class: int = 6) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("data_batch_1", "data_batch_2", "test_batch")):
        x, y = synthetic_images(per_class, size=32, channels=3, seed=10 + i)
        blob = {b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"labels": y.tolist()}
        (d / name).write_bytes(pickle.dumps(blob))
    names = [f"c{i}".encode() for i in range(10)]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return d


def write_imagefolder(
    d: Path, per_class: int = 4, n_classes: int = 3, mode: str = "L", ext: str = ".png"
) -> Path:
    from PIL import Image

    for split, seed in (("train", 1), ("test", 2)):
        x, y = synthetic_images(
            per_class, n_classes=n_classes, size=16, channels=1 if mode == "L" else 3, seed=seed
        )
        for i, (im, lbl) in enumerate(zip(x, y, strict=True)):
            cdir = d / split / f"class_{lbl}"
            cdir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im[..., 0] if mode == "L" else im, mode=mode).save(cdir / f"{i}{ext}")
    return d


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_idx_dataset(tmp_path / "fmnist")
