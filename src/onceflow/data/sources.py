"""Dataset readers: Fashion-MNIST (gzipped IDX), CIFAR-10 (python pickles), image folders.

Each reader returns a :class:`RawDataset` (uint8 NHWC images, int64 labels, class names) for the
source's own train and test splits, and raises :class:`DataError` naming the file and what is
wrong with it. Nothing here writes files.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onceflow.errors import DataError

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


# ----------------------------------------------------------------------------- IDX (MNIST-like)
_IDX_DTYPES = {0x08: np.uint8}


def _open_maybe_gz(stem: Path) -> tuple[Path, bytes]:
    for candidate in (stem.with_name(stem.name + ".gz"), stem):
        if candidate.is_file():
            raw = candidate.read_bytes()
            if candidate.suffix == ".gz":
                try:
                    raw = gzip.decompress(raw)
                except (OSError, EOFError) as err:
                    raise DataError(
                        f"{candidate}: not a complete gzip file ({err}); re-download it"
                    ) from None
            return candidate, raw
    raise DataError(f"{stem}.gz: file not found; {FASHION_MNIST_HINT}")


def parse_idx(raw: bytes, source: str, expected_ndim: int) -> np.ndarray:
    """Parse an IDX byte string (magic 0x0000TTNN, big-endian dims, then data)."""
    if len(raw) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES or ndim != expected_ndim:
        raise DataError(
            f"{source}: wrong IDX magic 0x{raw[:4].hex()} (expected 0x000008"
            f"{expected_ndim:02x}: unsigned bytes, {expected_ndim} dims); is this the right file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    n_bytes = int(np.prod(dims))
    if len(raw) - header < n_bytes:
        raise DataError(
            f"{source}: truncated: header promises {dims} = {n_bytes} bytes of data, "
            f"file holds {len(raw) - header}; re-download it"
        )
    if len(raw) - header > n_bytes:
        raise DataError(f"{source}: {len(raw) - header - n_bytes} unexpected trailing bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_pair(
    directory: Path, images_stem: str, labels_stem: str
) -> tuple[np.ndarray, np.ndarray]:
    img_file, img_raw = _open_maybe_gz(directory / images_stem)
    lbl_file, lbl_raw = _open_maybe_gz(directory / labels_stem)
    images = parse_idx(img_raw, str(img_file), expected_ndim=3)
    labels = parse_idx(lbl_raw, str(lbl_file), expected_ndim=1)
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


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(
            f"{path}: CIFAR-10 batch file not found (expected the cifar-10-batches-py layout)"
        )
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as err:  # pickle raises many types on corrupt input
        raise DataError(f"{path}: not a readable CIFAR-10 pickle ({err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict in the pickle, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path}: missing 'data' or 'labels' in the CIFAR-10 batch")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected (N, 3072)")
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_cifar10(path: Path) -> RawDataset:
    _require_dir(path, "CIFAR-10", "point data.path at the extracted cifar-10-batches-py directory")
    meta = _load_pickle(path / "batches.meta")
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])
    )
    if not names:
        raise DataError(f"{path / 'batches.meta'}: no label_names")
    batches = sorted(path.glob("data_batch_*"))
    if not batches:
        raise DataError(f"{path}: no data_batch_* files")
    parts = [_cifar_batch(b) for b in batches]
    te_x, te_y = _cifar_batch(path / "test_batch")
    tr_x = np.concatenate([p[0] for p in parts])
    tr_y = np.concatenate([p[1] for p in parts])
    return RawDataset(tr_x, tr_y, te_x, te_y, names)


# --------------------------------------------------------------------------------- imagefolder
def _load_image(file: Path, size: int | None, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{file}: unreadable image ({err}); fix or remove it") from None
    return arr[..., None] if arr.ndim == 2 else arr


def _folder_mode(files: list[Path], channels: int | None) -> str:
    if channels is not None:
        return "L" if channels == 1 else "RGB"
    from PIL import Image

    for f in files[:64]:  # a sample decides; all-grayscale folders stay one channel
        try:
            with Image.open(f) as im:
                if im.mode not in ("L", "1", "I;16", "I"):
                    return "RGB"
        except OSError:
            continue  # reported with its name when actually loaded
    return "L"


def _read_folder_split(root: Path, classes: tuple[str, ...], size: int | None, mode: str):
    images, labels = [], []
    for idx, name in enumerate(classes):
        cdir = root / name
        files = (
            sorted(p for p in cdir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if cdir.is_dir()
            else []
        )
        if not files:
            raise DataError(f"{cdir}: class '{name}' has no images (PNG/JPEG) in {root.name}/")
        for f in files:
            images.append(_load_image(f, size, mode))
            labels.append(idx)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(
            f"{root}: images have different sizes {sorted(shapes)[:4]}; "
            "set data.image_size to resize them"
        )
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def read_imagefolder(path: Path, image_size: int | None, channels: int | None) -> RawDataset:
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
    all_files = [f for c in classes for f in (train_root / c).glob("*")]
    mode = _folder_mode(all_files, channels)
    tr_x, tr_y = _read_folder_split(train_root, classes, image_size, mode)
    te_x, te_y = _read_folder_split(test_root, classes, image_size, mode)
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise DataError(
            f"{path}: train images are {tr_x.shape[1:]} but test images {te_x.shape[1:]}"
        )
    return RawDataset(tr_x, tr_y, te_x, te_y, classes)


def read_source(
    source: str, path: str | Path, image_size: int | None = None, channels: int | None = None
) -> RawDataset:
    """Dispatch on ``data.source``; then check labels against the class set."""
    p = Path(path)
    if source == "fashion-mnist":
        raw = read_fashion_mnist(p)
    elif source == "cifar10":
        raw = read_cifar10(p)
    elif source == "imagefolder":
        raw = read_imagefolder(p, image_size, channels)
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
