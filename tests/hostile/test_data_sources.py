"""Bad dataset files, one row per breakage, for each source (Fashion-MNIST IDX, CIFAR-10
pickles, image folders) and the validation gate: `prepare` exits 2 with one line naming the
file and what to do, writes nothing, and never hangs on a FIFO or follows a link outside."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.data.conftest import idx_bytes
from tests.hostile.conftest import PREPARE_OUTS, copy_source, prepare_args
from tests.hostile.harness import Row, Workspace, check, run_stage

DS = "dataset"
TRAIN_IMAGES = f"{DS}/train-images-idx3-ubyte.gz"
TRAIN_LABELS = f"{DS}/train-labels-idx1-ubyte.gz"
TEST_IMAGES = f"{DS}/t10k-images-idx3-ubyte.gz"
TEST_LABELS = f"{DS}/t10k-labels-idx1-ubyte.gz"


# ------------------------------------------------------------------------------ builders
def _edit(rel: str, fn):
    """Replace file ``rel`` by ``fn(its bytes)``."""

    def build(ws: Workspace) -> None:
        p = ws.path(rel)
        p.write_bytes(fn(p.read_bytes()))

    return build


def _edit_idx(rel: str, fn):
    """Edit the decompressed IDX bytes of ``rel`` and re-gzip them (a valid gzip stream)."""
    return _edit(rel, lambda b: gzip.compress(fn(gzip.decompress(b))))


def _flip(start: int, stop: int):
    def fn(b: bytes) -> bytes:
        a = bytearray(b)
        lo, hi = start % len(a), stop % len(a) if stop else len(a)
        for i in range(lo, hi):
            a[i] ^= 0xA5
        return bytes(a)

    return fn


def _corrupt_middle(b: bytes) -> bytes:
    return _flip(len(b) // 3, len(b) // 3 + 64)(b)


def _replace(rel: str, make):
    """Remove ``rel`` and let ``make(path)`` put something else there."""

    def build(ws: Workspace) -> None:
        p = ws.path(rel)
        if p.is_dir() and not p.is_symlink():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
        make(p)

    return build


def _copy(src: str, dst: str):
    return lambda ws: ws.path(dst).write_bytes(ws.path(src).read_bytes())


def _symlink_to(target: str):
    return lambda p: p.symlink_to(target)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _mkdir(p: Path) -> None:
    p.mkdir()


def _data(**values: object):
    def build(ws: Workspace) -> None:
        ws.params["data"].update(values)

    return build


def _both(*builds):
    def build(ws: Workspace) -> None:
        for b in builds:
            b(ws)

    return build


def _idx_header(dims: tuple[int, ...]):
    def fn(raw: bytes) -> bytes:
        head = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
        return head + raw[4 + 4 * len(dims) :]

    return fn


def _pickle(obj: object):
    return lambda _: pickle.dumps(obj)


def _batch(**over: object):
    """A CIFAR batch with fields replaced."""

    def fn(b: bytes) -> bytes:
        d = pickle.loads(b)
        d.update({k.encode(): v for k, v in over.items()})
        return pickle.dumps(d)

    return fn


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def png_bytes(width: int, height: int, data: bytes = b"\x00" * 8) -> bytes:
    """A grayscale PNG whose header declares ``width`` x ``height`` (data need not fill it)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(data))
            + chunk(b"IEND", b""))  # fmt: skip


def _first_image(ws: Workspace) -> Path:
    return sorted(ws.path(f"{DS}/train/class_0").iterdir())[0]


def _on_image(fn):
    def build(ws: Workspace) -> None:
        p = _first_image(ws)
        fn(p)

    return build


def _write(data: bytes):
    return lambda p: p.write_bytes(data)


def _replace_image(make):
    def build(ws: Workspace) -> None:
        p = _first_image(ws)
        p.unlink()
        make(p)

    return build


def _folder_op(fn):
    return lambda ws: fn(ws.path(DS))


def _rm_class_images(split: str, cls: str):
    def fn(root: Path) -> None:
        for p in (root / split / cls).iterdir():
            p.unlink()

    return _folder_op(fn)


def _rmtree(rel: str):
    def fn(root: Path) -> None:
        import shutil

        shutil.rmtree(root / rel)

    return _folder_op(fn)


def _resize_first(ws: Workspace) -> None:
    from PIL import Image

    p = _first_image(ws)
    Image.new("L", (20, 20)).save(p)


def _only_one_class(root: Path) -> None:
    import shutil

    for split in ("train", "test"):
        for c in ("class_1", "class_2"):
            shutil.rmtree(root / split / c)


def _extra_test_class(root: Path) -> None:
    import shutil

    shutil.copytree(root / "test" / "class_0", root / "test" / "zebra")


# --------------------------------------------------------------------------------- rows
FASHION = [
    Row("gzip-corrupt-bytes", _edit(TRAIN_IMAGES, _corrupt_middle), "train-images-idx3-ubyte.gz"),
    Row("gzip-truncated", _edit(TRAIN_IMAGES, lambda b: b[: len(b) // 2]), "re-download",
        subprocess=True),
    Row("gzip-bad-crc", _edit(TRAIN_LABELS, _flip(-8, -5)), "train-labels-idx1-ubyte.gz"),
    Row("gzip-not-gzip", _edit(TEST_LABELS, lambda b: b"plain text, not gzip\n"), "t10k-labels"),
    Row("idx-truncated", _edit_idx(TRAIN_IMAGES, lambda r: r[:5000]), "truncated"),
    Row("idx-header-cut", _edit_idx(TEST_IMAGES, lambda r: r[:9]), "truncated IDX header"),
    Row("idx-crafted-huge-dims", _edit_idx(TRAIN_IMAGES, _idx_header((2**32 - 1, 28, 28))),
        "corrupt or crafted"),
    Row("idx-zero-dims", _edit_idx(TRAIN_IMAGES, _idx_header((0, 28, 28))), "empty array"),
    Row("idx-wrong-magic", _edit_idx(TRAIN_LABELS, lambda r: b"\x00\x00\x09\x01" + r[4:]),
        "wrong IDX magic"),
    Row("idx-images-as-labels", _copy(TRAIN_IMAGES, TRAIN_LABELS),
        "train-labels-idx1-ubyte.gz: wrong IDX magic"),
    Row("idx-trailing-bytes", _edit_idx(TRAIN_IMAGES, lambda r: r + b"\x00" * 100), "trailing"),
    Row("labels-count-mismatch", _edit(TRAIN_LABELS, lambda _: gzip.compress(
        idx_bytes(np.zeros(3, np.uint8)))), "3 labels but"),
    Row("labels-out-of-range", _edit(TEST_LABELS, lambda _: gzip.compress(
        idx_bytes(np.full(50, 10, np.uint8)))), "outside the 10 classes"),
    Row("file-missing", _replace(TEST_IMAGES, lambda p: None), "file not found"),
    Row("symlink-outside", _replace(TRAIN_LABELS, _symlink_to("/etc/passwd")),
        "outside the dataset directory"),
    Row("symlink-dangling", _replace(TRAIN_LABELS, _symlink_to("/nonexistent/labels.gz")),
        "dangling"),
    Row("fifo-instead-of-file", _replace(TRAIN_IMAGES, _fifo), "not a regular file"),
    Row("dir-instead-of-file", _replace(TRAIN_IMAGES, _mkdir), "not a regular file"),
    Row("path-is-a-file", _data(path="/etc/hostname"), "expected a directory"),
    Row("path-missing", _data(path="/nonexistent/fashion"), "does not exist"),
]  # fmt: skip

CIFAR = [
    Row("pickle-corrupt-bytes", _edit(f"{DS}/data_batch_1", _flip(0, 24)), "data_batch_1"),
    Row("pickle-truncated", _edit(f"{DS}/data_batch_2", lambda b: b[: len(b) // 2]),
        "not a readable CIFAR-10 pickle"),
    Row("pickle-malicious", _edit(f"{DS}/data_batch_1", _pickle({b"data": _Evil()})),
        "refusing to load"),
    Row("pickle-not-dict", _edit(f"{DS}/test_batch", _pickle([1, 2, 3])), "expected a dict"),
    Row("batch-wrong-shape", _edit(f"{DS}/data_batch_1", _batch(
        data=np.zeros((30, 100), np.uint8))), "expected (N, 3072)"),
    Row("batch-string-labels", _edit(f"{DS}/data_batch_1", _batch(labels=["cat"] * 30)),
        "'labels' must be a list of integers"),
    Row("batch-pixels-over-255", _edit(f"{DS}/data_batch_2", _batch(
        data=np.full((30, 3072), 300, np.int16))), "0..255"),
    Row("batch-label-count", _edit(f"{DS}/data_batch_1", _batch(labels=[0, 1])), "2 labels for"),
    Row("batch-empty", _edit(f"{DS}/test_batch", _batch(data=np.zeros((0, 3072), np.uint8),
                                                      labels=[])), "holds no images"),
    Row("labels-out-of-range", _edit(f"{DS}/test_batch", _batch(labels=[12] * 30)),
        "outside the 10 classes"),
    Row("meta-missing", _replace(f"{DS}/batches.meta", lambda p: None), "batches.meta"),
    Row("meta-no-names", _edit(f"{DS}/batches.meta", _pickle({b"num_cases_per_batch": 3})),
        "label_names"),
    Row("test-batch-missing", _replace(f"{DS}/test_batch", lambda p: None), "test_batch"),
    Row("symlink-outside", _replace(f"{DS}/data_batch_2", _symlink_to("/etc/passwd")),
        "outside the dataset directory"),
]  # fmt: skip

FOLDER = [
    Row("png-bomb-header", _replace_image(_write(png_bytes(20000, 20000))),
        "data.max_image_pixels"),
    Row("png-over-limit", _replace_image(_write(png_bytes(5000, 4000))), "5000x4000"),
    Row("limit-from-params", _data(max_image_pixels=100), "exceeds data.max_image_pixels (100)"),
    Row("png-corrupt-bytes", _on_image(lambda p: p.write_bytes(_flip(40, 60)(p.read_bytes()))),
        "unreadable image"),
    Row("png-truncated", _on_image(lambda p: p.write_bytes(p.read_bytes()[:50])),
        "unreadable image"),
    Row("text-named-png", _replace_image(_write(b"hello, not an image\n")), "unreadable image"),
    Row("png-zlib-garbage", _replace_image(_write(png_bytes(16, 16, b"\x00") [:-20]
                                                  + b"garbage" * 3)), "unreadable image"),
    Row("symlink-outside", _replace_image(_symlink_to("/etc/passwd")),
        "outside the dataset directory"),
    Row("fifo-image", _replace_image(_fifo), "not a regular file"),
    Row("dir-named-png", _replace_image(_mkdir), "not a regular file"),
    Row("class-without-images", _rm_class_images("test", "class_1"), "class 'class_1' has no"),
    Row("one-class-only", _folder_op(_only_one_class), "need at least 2 class"),
    Row("class-only-in-test", _folder_op(_extra_test_class), "do not exist in train"),
    Row("mixed-sizes", _resize_first, "set data.image_size"),
    Row("test-split-missing", _rmtree("test"), "test split directory does not exist"),
    Row("subset-empties-val", _data(max_train=2), "data.max_train: 2 leaves the val split"),
]  # fmt: skip


def _run(tmp_path: Path, sources: dict[str, Path], source: str, row: Row, outs=PREPARE_OUTS):
    ws = Workspace(tmp_path)
    copy_source(ws, sources[source], source)
    ws.params["data"]["val_fraction"] = 0.2
    row.build(ws)
    proc = run_stage(ws, "prepare", prepare_args(), in_process=not row.subprocess)
    check(proc, row, [tmp_path / o for o in outs], tmp_path)
    assert not (tmp_path / "pwned").exists()
    return proc


@pytest.mark.parametrize("row", FASHION, ids=[r.id for r in FASHION])
def test_fashion_mnist(tmp_path: Path, sources: dict[str, Path], row: Row) -> None:
    _run(tmp_path, sources, "fashion-mnist", row)


@pytest.mark.parametrize("row", CIFAR, ids=[r.id for r in CIFAR])
def test_cifar10(tmp_path: Path, sources: dict[str, Path], row: Row) -> None:
    _run(tmp_path, sources, "cifar10", row)


@pytest.mark.parametrize("row", FOLDER, ids=[r.id for r in FOLDER])
def test_imagefolder(tmp_path: Path, sources: dict[str, Path], row: Row) -> None:
    _run(tmp_path, sources, "imagefolder", row)


# ------------------------------------------------------------------------- the data gate
def _duplicate_train(ws: Workspace) -> None:
    """Every training image twice: after the split, val holds copies of train images."""
    for rel in (TRAIN_IMAGES, TRAIN_LABELS):
        p = ws.path(rel)
        raw = gzip.decompress(p.read_bytes())
        ndim = raw[3]
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        body = raw[4 + 4 * ndim :]
        dims[0] *= 2
        head = raw[:4] + b"".join(d.to_bytes(4, "big") for d in dims)
        p.write_bytes(gzip.compress(head + body + body))


def _leak_test_into_train(ws: Workspace) -> None:
    for src, dst in ((TEST_IMAGES, TRAIN_IMAGES), (TEST_LABELS, TRAIN_LABELS)):
        ws.path(dst).write_bytes(ws.path(src).read_bytes())


def _drop_test_class(ws: Workspace) -> None:
    p = ws.path(TEST_LABELS)
    labels = np.frombuffer(gzip.decompress(p.read_bytes())[8:], np.uint8).copy()
    labels[labels == 7] = 6
    p.write_bytes(gzip.compress(idx_bytes(labels)))


GATE = [
    Row("train-duplicated-into-val", _duplicate_train, "data.max_train_val_duplicates"),
    Row("test-leaks-into-train", _leak_test_into_train, "no_test_leak"),
    Row("class-missing-in-test", _drop_test_class, "every_class_present: missing test:7"),
]


@pytest.mark.parametrize("row", GATE, ids=[r.id for r in GATE])
def test_gate(tmp_path: Path, sources: dict[str, Path], row: Row) -> None:
    # The report is written on failure (it is how a user sees why); nothing else is.
    proc = _run(tmp_path, sources, "fashion-mnist", row, outs=PREPARE_OUTS[:2])
    report = json.loads((tmp_path / "reports/v.json").read_text())
    assert report["success"] is False
    if row.id == "train-duplicated-into-val":
        n = report["n_train_val_duplicates"]
        assert n > 0 and re.search(rf"\b{n} val images duplicate train images", proc.stderr)


def test_duplicates_within_the_threshold_pass(tmp_path: Path, sources: dict[str, Path]) -> None:
    """The control: the same data passes once the threshold allows the duplicates."""
    row = Row("allowed", _both(_duplicate_train, _data(max_train_val_duplicates=10**6)), "")
    ws = Workspace(tmp_path)
    copy_source(ws, sources["fashion-mnist"], "fashion-mnist")
    ws.params["data"]["val_fraction"] = 0.2
    row.build(ws)
    proc = run_stage(ws, "prepare", prepare_args())
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics/data.details.json").read_text())
    assert metrics["n_train_val_duplicates"] > 0 and metrics["validation_success"] is True
