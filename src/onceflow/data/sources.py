"""Dataset readers: Fashion-MNIST (gzipped IDX), CIFAR-10 (python pickles), image folders.

Each reader returns a :class:`RawDataset` (uint8 NHWC images, int64 labels, class names) for the
source's own train and test splits, and raises :class:`DataError` naming the file and what is
wrong with it. Nothing here writes files.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import math
import pickle
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from onceflow.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian) or download the four "
    "*.gz files from the official Fashion-MNIST repository (zalandoresearch/fashion-mnist) "
    "into that directory and set data.path"
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # params data.max_image_pixels


@dataclass(frozen=True)
class RawDataset:
    """A source's train and test splits before onceflow's own split and checks."""

    train_images: np.ndarray  # uint8 (N, H, W, C)
    train_labels: np.ndarray  # int64 (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: {what} directory does not exist; {hint}")
    if not path.is_dir():
        raise DataError(f"{path}: expected a directory holding the {what}, found a file")


def checked_file(path: Path, root: Path) -> Path:
    """``path`` if it is a regular file inside ``root`` (after following symlinks).

    A symlink may point elsewhere inside the dataset directory, never outside it (a link to
    ``/etc/...`` or ``/dev/zero`` is refused, not read), and devices or FIFOs are never opened.
    """
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (a dangling symlink?)") from None
    except (OSError, RuntimeError) as err:  # symlink loop
        raise DataError(f"{path}: cannot resolve ({err}); fix or remove it") from None
    if not resolved.is_relative_to(root.resolve()):
        raise DataError(
            f"{path}: a symlink to {resolved}, outside the dataset directory {root}; copy the "
            "file into it (or point data.path at the directory that holds it)"
        )
    if not stat.S_ISREG(resolved.stat().st_mode):
        raise DataError(f"{path}: not a regular file; remove it from the dataset directory")
    return resolved


# ----------------------------------------------------------------------------- IDX (MNIST-like)
_IDX_DTYPES = {0x08: np.uint8}
# A header promising more than this is crafted or corrupt (Fashion-MNIST's train images: 47 MB).
MAX_IDX_BYTES = 4 << 30


def _read_idx_stream(fh: BinaryIO, source: str, expected_ndim: int) -> np.ndarray:
    """Read an IDX stream (magic 0x0000TTNN, big-endian dims, then data), checking the header
    before reading the data: a crafted header never makes us allocate or decompress more."""
    magic = fh.read(4)
    if len(magic) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(magic)} bytes)")
    zero, dtype_code, ndim = int.from_bytes(magic[:2], "big"), magic[2], magic[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim != expected_ndim:
        raise DataError(
            f"{source}: wrong IDX magic 0x{magic.hex()} (expected 0x000008"
            f"{expected_ndim:02x}: unsigned bytes, {expected_ndim} dims); is this the right file?"
        )
    head = fh.read(4 * ndim)
    if len(head) < 4 * ndim:
        raise DataError(f"{source}: truncated IDX header; re-download it")
    dims = tuple(int.from_bytes(head[4 * i : 4 * i + 4], "big") for i in range(ndim))
    if any(d == 0 for d in dims):
        raise DataError(f"{source}: IDX header declares an empty array {dims}; re-download it")
    n_bytes = math.prod(dims)
    if n_bytes > MAX_IDX_BYTES:
        raise DataError(
            f"{source}: IDX header declares {dims} = {n_bytes} bytes (more than "
            f"{MAX_IDX_BYTES >> 30} GiB); the header is corrupt or crafted, re-download it"
        )
    data = fh.read(n_bytes)
    if len(data) < n_bytes:
        raise DataError(
            f"{source}: truncated: header promises {dims} = {n_bytes} bytes of data, "
            f"file holds {len(data)}; re-download it"
        )
    extra = len(fh.read(1 << 20))
    if extra:
        raise DataError(f"{source}: unexpected trailing bytes after the IDX data; re-download it")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def parse_idx(raw: bytes, source: str, expected_ndim: int) -> np.ndarray:
    """Parse an IDX byte string."""
    return _read_idx_stream(io.BytesIO(raw), source, expected_ndim)


def _read_idx_file(directory: Path, stem: str, expected_ndim: int) -> tuple[Path, np.ndarray]:
    """Find ``stem.gz`` (or an uncompressed ``stem``) and parse it; a corrupt gzip stream
    (bad bytes, bad CRC, cut short) is a DataError naming the file."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if not (candidate.exists() or candidate.is_symlink()):
            continue
        real = checked_file(candidate, directory)
        try:
            with gzip.open(real, "rb") if candidate.suffix == ".gz" else open(real, "rb") as fh:
                return candidate, _read_idx_stream(fh, str(candidate), expected_ndim)
        except (OSError, EOFError, zlib.error) as err:
            what = "gzip file" if candidate.suffix == ".gz" else "file"
            raise DataError(
                f"{candidate}: not a valid, complete {what} ({err}); re-download it"
            ) from None
    raise DataError(f"{directory / stem}.gz: file not found; {FASHION_MNIST_HINT}")


def _read_idx_pair(
    directory: Path, images_stem: str, labels_stem: str
) -> tuple[np.ndarray, np.ndarray]:
    img_file, images = _read_idx_file(directory, images_stem, expected_ndim=3)
    lbl_file, labels = _read_idx_file(directory, labels_stem, expected_ndim=1)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{lbl_file}: {labels.shape[0]} labels but {img_file.name} holds {images.shape[0]} "
            "images; the two files must come from the same release"
        )
    return images[..., None].copy(), labels.astype(np.int64)


def read_fashion_mnist(path: Path) -> RawDataset:
    _require_dir(path, "Fashion-MNIST", FASHION_MNIST_HINT)
    tr_x, tr_y = _read_idx_pair(path, *FASHION_MNIST_FILES["train"])
    te_x, te_y = _read_idx_pair(path, *FASHION_MNIST_FILES["test"])
    return RawDataset(tr_x, tr_y, te_x, te_y, FASHION_MNIST_CLASSES)


# ------------------------------------------------------------------------------------ CIFAR-10
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only the numpy constructors they need, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path, root: Path) -> dict:
    if not (path.is_file() or path.is_symlink()):
        raise DataError(
            f"{path}: CIFAR-10 batch file not found (expected the cifar-10-batches-py layout)"
        )
    real = checked_file(path, root)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(real.read_bytes()), encoding="bytes").load()
    except Exception as err:  # pickle raises many types on corrupt input
        raise DataError(f"{path}: not a readable CIFAR-10 pickle ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the pickle, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path, root)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path}: missing 'data' or 'labels' in the CIFAR-10 batch")
    data, labels = _as_array(d["data"], path, "data"), _as_array(d["labels"], path, "labels")
    if data.dtype != np.uint8:
        ok = np.issubdtype(data.dtype, np.integer) and (
            data.size == 0 or (data.min() >= 0 and data.max() <= 255)
        )
        if not ok:
            raise DataError(f"{path}: 'data' must hold pixel values 0..255 (got {data.dtype})")
        data = data.astype(np.uint8)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"{path}: 'labels' must be a list of integers (got {labels.dtype})")
    labels = labels.astype(np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072)")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if data.shape[0] == 0:
        raise DataError(f"{path}: the CIFAR-10 batch holds no images; re-extract the archive")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _as_array(value: object, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise DataError(f"{path}: '{key}' is not an array ({err})") from None


def read_cifar10(path: Path) -> RawDataset:
    _require_dir(path, "CIFAR-10", "point data.path at the extracted cifar-10-batches-py directory")
    meta = _load_pickle(path / "batches.meta", path)
    label_names = meta.get("label_names")
    if not isinstance(label_names, list | tuple) or not label_names:
        raise DataError(f"{path / 'batches.meta'}: no label_names list; re-extract the archive")
    names = tuple(n.decode(errors="replace") if isinstance(n, bytes) else str(n)
                  for n in label_names)  # fmt: skip
    batches = sorted(path.glob("data_batch_*"))
    if not batches:
        raise DataError(f"{path}: no data_batch_* files")
    parts = [_cifar_batch(b, path) for b in batches]
    te_x, te_y = _cifar_batch(path / "test_batch", path)
    tr_x = np.concatenate([p[0] for p in parts])
    tr_y = np.concatenate([p[1] for p in parts])
    return RawDataset(tr_x, tr_y, te_x, te_y, names)


# --------------------------------------------------------------------------------- imagefolder
# What PIL raises on corrupt or crafted files (broken chunks, bad zlib streams, cut-off data).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, TypeError)


@contextlib.contextmanager
def _open_image(file: Path, root: Path, max_pixels: int) -> Iterator[Image.Image]:
    """Open ``file`` lazily (header only) and refuse it before decoding if it holds more than
    ``max_pixels`` pixels: a tiny PNG can declare a gigapixel canvas (decompression bomb)."""
    from PIL import Image

    real = checked_file(file, root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(real) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise _TooBig(w, h)
                yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, _TooBig) as err:
        size = f"{err.w}x{err.h} " if isinstance(err, _TooBig) else ""
        raise DataError(
            f"{file}: image of {size}pixels exceeds data.max_image_pixels ({max_pixels}) "
            "(a decompression bomb?); remove it or raise data.max_image_pixels"
        ) from None
    except _PIL_ERRORS as err:
        raise DataError(f"{file}: unreadable image ({err}); fix or remove it") from None


class _TooBig(Exception):
    def __init__(self, w: int, h: int) -> None:
        super().__init__(f"{w}x{h}")
        self.w, self.h = w, h


def _load_image(file: Path, root: Path, size: int | None, mode: str, max_pixels: int):
    from PIL import Image

    with _open_image(file, root, max_pixels) as im:
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _folder_mode(files: list[Path], root: Path, channels: int | None, max_pixels: int) -> str:
    if channels is not None:
        return "L" if channels == 1 else "RGB"
    for f in files[:64]:  # a sample decides; all-grayscale folders stay one channel
        with _open_image(f, root, max_pixels) as im:
            if im.mode not in ("L", "1", "I;16", "I"):
                return "RGB"
    return "L"


def _image_files(cdir: Path) -> list[Path]:
    if not cdir.is_dir():
        return []
    return sorted(p for p in cdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _read_folder_split(
    root: Path, base: Path, classes: tuple[str, ...], size: int | None, mode: str, max_pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for idx, name in enumerate(classes):
        cdir = root / name
        files = _image_files(cdir)
        if not files:
            raise DataError(f"{cdir}: class '{name}' has no images (PNG/JPEG) in {root.name}/")
        for f in files:
            images.append(_load_image(f, base, size, mode, max_pixels))
            labels.append(idx)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"{root}: images have different sizes {sorted(shapes)[:4]}; "
            "set data.image_size to resize them"
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def read_imagefolder(
    path: Path,
    image_size: int | None,
    channels: int | None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> RawDataset:
    hint = "expected <path>/train/<class>/*.png and <path>/test/<class>/*.png"
    _require_dir(path, "image-folder", hint)
    train_root, test_root = path / "train", path / "test"
    for root in (train_root, test_root):
        _require_dir(root, f"{root.name} split", hint)
    classes = tuple(sorted(p.name for p in train_root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise DataError(f"{train_root}: need at least 2 class sub-folders, found {len(classes)}")
    extra = sorted({p.name for p in test_root.iterdir() if p.is_dir()} - set(classes))
    if extra:
        raise DataError(f"{test_root}: classes {extra} do not exist in train/")
    all_files = [f for c in classes for f in _image_files(train_root / c)]
    mode = _folder_mode(all_files, path, channels, max_pixels)
    tr_x, tr_y = _read_folder_split(train_root, path, classes, image_size, mode, max_pixels)
    te_x, te_y = _read_folder_split(test_root, path, classes, image_size, mode, max_pixels)
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise DataError(
            f"{path}: train images are {tr_x.shape[1:]} but test images {te_x.shape[1:]}"
        )
    return RawDataset(tr_x, tr_y, te_x, te_y, classes)


def read_source(
    source: str,
    path: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> RawDataset:
    """Dispatch on ``data.source``; then check labels against the class set."""
    p = Path(path)
    if source == "fashion-mnist":
        raw = read_fashion_mnist(p)
    elif source == "cifar10":
        raw = read_cifar10(p)
    elif source == "imagefolder":
        raw = read_imagefolder(p, image_size, channels, max_image_pixels)
    else:  # the config schema already restricts this
        raise DataError(f"data.source: unknown source {source!r}")
    n = len(raw.classes)
    for split, labels in (("train", raw.train_labels), ("test", raw.test_labels)):
        bad = labels[(labels < 0) | (labels >= n)]
        if bad.size:
            raise DataError(
                f"{p}: {split} labels {sorted(set(bad.tolist()))[:5]} are outside the {n} classes "
                f"0..{n - 1} ({bad.size} images); the label file does not match this dataset"
            )
    log.info(
        "read %s from %s: %d train, %d test, %d classes, image %s",
        source, p, len(raw.train_labels), len(raw.test_labels), n, raw.train_images.shape[1:],
    )  # fmt: skip
    return raw
