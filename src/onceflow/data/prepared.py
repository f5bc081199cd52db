"""The prepared-data format every stage after `prepare` reads.

``data/prepared/`` holds, per split (train, val, test), ``<split>_images.npy`` (uint8,
N x H x W x C) and ``<split>_labels.npy`` (int64, N), plus ``meta.json``. Arrays are opened
memory-mapped, so a stage touches only the pages it reads.

``meta.json`` key ``content_sha256`` (a contract other stages rely on) is the sha256 of every
split's images and labels plus the normalization and class list (:func:`content_hash`): it
changes whenever the prepared data would train or evaluate differently, even at equal size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onceflow.artifacts import prepared_meta
from onceflow.errors import DataError

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Meta:
    classes: tuple[str, ...]  # class names, index = label
    height: int
    width: int
    channels: int  # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...]  # per channel, pixel/255 scale, from the train split
    std: tuple[float, ...]
    source: str
    counts: dict[str, int]  # images per split
    content_sha256: str | None = None  # content_hash of the data; None in pre-hash directories

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "classes": list(self.classes),
            "height": self.height,
            "width": self.width,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "source": self.source,
            "counts": dict(self.counts),
            **({"content_sha256": self.content_sha256} if self.content_sha256 else {}),
        }

    @classmethod
    def from_json(cls, d: dict) -> Meta:
        return cls(
            classes=tuple(d["classes"]),
            height=int(d["height"]),
            width=int(d["width"]),
            channels=int(d["channels"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            source=str(d["source"]),
            counts={k: int(v) for k, v in d["counts"].items()},
            content_sha256=d.get("content_sha256"),
        )


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class PreparedData:
    train: Split
    val: Split
    test: Split
    meta: Meta

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def content_hash(splits: Mapping[str, Split], meta: Meta) -> str:
    """sha256 over each split's images and labels (shape, dtype and bytes, splits in order)
    and what turns them into inputs and targets: classes, image geometry, mean and std. One
    streaming pass over the arrays (~50 ms for Fashion-MNIST)."""
    h = hashlib.sha256()
    head = {k: v for k, v in meta.to_json().items() if k not in ("counts", "content_sha256")}
    head.pop("source", None)  # the same pixels from another reader are the same data
    h.update(json.dumps(head, sort_keys=True).encode())
    for name in SPLITS:
        split = splits[name]
        for kind, arr, dtype in (
            ("images", split.images, np.uint8),
            ("labels", split.labels, np.int64),
        ):
            a = np.ascontiguousarray(arr, dtype=dtype)
            h.update(f"{name}/{kind}/{a.dtype.str}/{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def data_identity(data: PreparedData) -> str:
    """The prepared data's ``content_sha256``, computed when meta.json predates the key."""
    if data.meta.content_sha256:
        return data.meta.content_sha256
    return content_hash({n: data.split(n) for n in SPLITS}, data.meta)


def save_split(directory: Path, name: str, split: Split) -> None:
    np.save(directory / f"{name}_images.npy", np.ascontiguousarray(split.images, dtype=np.uint8))
    np.save(directory / f"{name}_labels.npy", np.ascontiguousarray(split.labels, dtype=np.int64))


def load_prepared(directory: str | Path, *, mmap: bool = True) -> PreparedData:
    """Open a prepared-data directory; a missing or foreign directory is a DataError."""
    d = Path(directory)
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise DataError(
            f"{d}: no meta.json — not a prepared-data directory (run `dvc repro prepare`)"
        )
    rerun = "rerun `dvc repro prepare`"
    raw = prepared_meta(meta_path)  # JSON-level damage: one line naming the file and prepare
    try:
        meta = Meta.from_json(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"{meta_path}: not a prepared-data description ({err!r}); {rerun}"
        ) from None
    mode = "r" if mmap else None
    splits = {}
    for name in SPLITS:
        try:
            images = np.load(d / f"{name}_images.npy", mmap_mode=mode, allow_pickle=False)
            labels = np.load(d / f"{name}_labels.npy", mmap_mode=mode, allow_pickle=False)
        except FileNotFoundError as err:
            raise DataError(f"{d}: missing {Path(err.filename).name} ({rerun})") from None
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{d}: {name} arrays are unreadable ({err}); {rerun}") from None
        shape = (meta.height, meta.width, meta.channels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
            raise DataError(
                f"{d / f'{name}_images.npy'}: {images.dtype} {images.shape}, expected uint8 "
                f"(N, {', '.join(map(str, shape))}) as meta.json says; {rerun}"
            )
        if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "iu":
            raise DataError(
                f"{d / f'{name}_labels.npy'}: {labels.dtype} {labels.shape} does not hold one "
                f"integer label per image ({len(images)}); {rerun}"
            )
        splits[name] = Split(images=images, labels=labels)
    return PreparedData(meta=meta, **splits)


def normalize(images_u8: np.ndarray, meta: Meta) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW, scaled to [0,1] then standardized with the train mean/std."""
    x = images_u8.astype(np.float32) / 255.0
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
