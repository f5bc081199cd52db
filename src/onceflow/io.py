"""Atomic file and directory writes (a reader never sees a half-written output) and the
sha256 digests every stage keys its outputs, resumes and registry objects by."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temp directory beside ``path``; on success it replaces ``path`` whole.

    On any exception the temp directory is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the final dir normal permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_chunks(chunks: Iterable[bytes], h: Any = None) -> str:
    """sha256 of a stream of byte chunks (fed into ``h`` when given, so callers can prefix it)."""
    h = hashlib.sha256() if h is None else h
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str], h: Any = None) -> str:
    """sha256 of a file's bytes, streamed (fed into ``h`` when given)."""
    with open(path, "rb") as fh:
        return sha256_chunks(iter(lambda: fh.read(_CHUNK), b""), h)


def sha256_files(named: Iterable[tuple[str, str | os.PathLike[str]]], h: Any = None) -> str:
    """sha256 over several files in the given order: each file's name, a NUL, then its bytes.
    The names are the caller's (a relative path, a module name), so moving the tree keeps it."""
    h = hashlib.sha256() if h is None else h
    for name, path in named:
        h.update(name.encode() + b"\0")
        sha256_file(path, h)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """sha256 of JSON data in a stable form (sorted keys); a value JSON cannot hold is str()ed."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())


def remove_partial(
    outputs: Sequence[str | os.PathLike[str]], keep: Collection[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Remove what an interrupted or failed run left of ``outputs``: the hidden temp siblings
    of atomic writes (``.<name>.*.tmp``: a dead writer's, whatever their age), temp files
    inside an output directory, and each output not in ``keep`` (those that existed before
    the run, left alone)."""
    kept = {Path(k) for k in keep}
    removed = []
    for out in map(Path, outputs):
        leftovers = list(out.parent.glob(f".{out.name}.*.tmp")) if out.parent.is_dir() else []
        if out.is_dir():  # e.g. checkpoints (one folder per run): half-written atomic writes
            leftovers += sorted(out.glob("**/.*.tmp"), key=lambda p: len(p.parts))
        created = out not in kept and (out.exists() or out.is_symlink())
        for p in leftovers + ([out] if created else []):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def removing_partial(outputs: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Run the block; if it raises, remove the ``outputs`` it created (see remove_partial)."""
    existed = [Path(o) for o in outputs if Path(o).exists()]
    try:
        yield
    except BaseException:
        remove_partial(outputs, keep=existed)
        raise
