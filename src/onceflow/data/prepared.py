"""The prepared-data format every stage after `prepare` reads.

``data/prepared/`` holds, per split (train, val, test), ``<split>_images.npy`` (uint8,
N x H x W x C) and ``<split>_labels.npy`` (int64, N), plus ``meta.json``. Arrays are opened
memory-mapped, so a stage touches only the pages it reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    try:
        meta = Meta.from_json(json.loads(meta_path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
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
