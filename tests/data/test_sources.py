import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from onceflow.data.sources import parse_idx, read_source
from onceflow.errors import DataError
from tests.data.conftest import idx_bytes, write_cifar_dataset, write_imagefolder


def test_fashion_mnist_idx(idx_dir: Path):
    raw = read_source("fashion-mnist", idx_dir)
    assert raw.train_images.shape == (200, 28, 28, 1) and raw.train_images.dtype == np.uint8
    assert raw.test_labels.shape == (50,) and raw.test_labels.dtype == np.int64
    assert len(raw.classes) == 10 and raw.classes[0] == "T-shirt/top"


def test_idx_roundtrip_uncompressed(tmp_path: Path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(arr), "x", 3), arr)


def test_missing_directory(tmp_path: Path):
    with pytest.raises(
        DataError, match=r"does not exist; install it with `apt-get install dataset-fashion-mnist`"
    ):
        read_source("fashion-mnist", tmp_path / "absent")


def test_missing_file_named(idx_dir: Path):
    (idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: file not found"):
        read_source("fashion-mnist", idx_dir)


def test_truncated_idx(idx_dir: Path):
    f = idx_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: truncated"):
        read_source("fashion-mnist", idx_dir)


def test_truncated_gzip_stream(idx_dir: Path):
    f = idx_dir / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match=r"not a valid, complete gzip file"):
        read_source("fashion-mnist", idx_dir)


def test_wrong_magic(idx_dir: Path):
    # A labels file where the images file should be: 1 dim instead of 3.
    src = idx_dir / "train-labels-idx1-ubyte.gz"
    (idx_dir / "train-images-idx3-ubyte.gz").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: wrong IDX magic 0x00000801"):
        read_source("fashion-mnist", idx_dir)


def test_label_count_mismatch(idx_dir: Path):
    labels = np.zeros(7, dtype=np.uint8)
    (idx_dir / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(
        DataError, match=r"7 labels but train-images-idx3-ubyte.gz holds 200 images"
    ):
        read_source("fashion-mnist", idx_dir)


def test_labels_outside_class_set(idx_dir: Path):
    labels = np.full(50, 12, dtype=np.uint8)
    (idx_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match=r"test labels \[12\] are outside the 10 classes"):
        read_source("fashion-mnist", idx_dir)


def test_cifar10(tmp_path: Path):
    raw = read_source("cifar10", write_cifar_dataset(tmp_path / "cifar"))
    assert raw.train_images.shape == (120, 32, 32, 3)
    assert raw.test_images.shape == (60, 32, 32, 3)
    assert raw.classes[3] == "c3"


def test_cifar10_refuses_foreign_pickle(tmp_path: Path):
    import pickle

    d = write_cifar_dataset(tmp_path / "cifar")
    (d / "test_batch").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(DataError, match=r"test_batch: not a readable CIFAR-10 pickle"):
        read_source("cifar10", d)


@pytest.mark.parametrize(("mode", "ext", "channels"), [("L", ".png", 1), ("RGB", ".jpg", 3)])
def test_imagefolder(tmp_path: Path, mode: str, ext: str, channels: int):
    raw = read_source("imagefolder", write_imagefolder(tmp_path / "f", mode=mode, ext=ext))
    assert raw.train_images.shape == (12, 16, 16, channels)
    assert raw.classes == ("class_0", "class_1", "class_2")


def test_imagefolder_resize_and_force_rgb(tmp_path: Path):
    raw = read_source("imagefolder", write_imagefolder(tmp_path / "f"), image_size=20, channels=3)
    assert raw.train_images.shape == (12, 20, 20, 3)


def test_imagefolder_unreadable_image(tmp_path: Path):
    d = write_imagefolder(tmp_path / "f")
    bad = d / "train" / "class_1" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: unreadable image"):
        read_source("imagefolder", d)


def test_imagefolder_class_without_images(tmp_path: Path):
    d = write_imagefolder(tmp_path / "f")
    for f in (d / "test" / "class_2").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class 'class_2' has no images"):
        read_source("imagefolder", d)


def test_idx_crafted_header_refused_before_reading(idx_dir: Path):
    f = idx_dir / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (2**32 - 1).to_bytes(4, "big") + raw[8:]))
    with pytest.raises(DataError, match=r"corrupt or crafted"):
        read_source("fashion-mnist", idx_dir)


def test_corrupt_gzip_bytes(idx_dir: Path):
    f = idx_dir / "train-images-idx3-ubyte.gz"
    b = bytearray(f.read_bytes())
    b[len(b) // 3 : len(b) // 3 + 64] = bytes(64)
    f.write_bytes(bytes(b))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: not a valid, complete gzip"):
        read_source("fashion-mnist", idx_dir)


def test_symlink_outside_and_fifo_refused(idx_dir: Path):
    f = idx_dir / "t10k-labels-idx1-ubyte.gz"
    f.unlink()
    f.symlink_to("/etc/passwd")
    with pytest.raises(DataError, match=r"outside the dataset directory"):
        read_source("fashion-mnist", idx_dir)
    f.unlink()
    os.mkfifo(f)
    with pytest.raises(DataError, match=r"not a regular file"):
        read_source("fashion-mnist", idx_dir)


def test_symlink_inside_the_dataset_is_fine(idx_dir: Path):
    f = idx_dir / "t10k-labels-idx1-ubyte.gz"
    (idx_dir / "real.gz").write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(idx_dir / "real.gz")
    assert read_source("fashion-mnist", idx_dir).test_labels.shape == (50,)


def test_imagefolder_pixel_limit(tmp_path: Path):
    d = write_imagefolder(tmp_path / "f")
    with pytest.raises(DataError, match=r"exceeds data.max_image_pixels \(100\)"):
        read_source("imagefolder", d, max_image_pixels=100)
