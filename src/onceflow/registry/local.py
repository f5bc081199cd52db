"""``file://`` registry: a directory tree with the same layout as the S3 one.

Every write goes to a temp file beside its destination (fsync, then rename), so a reader never
sees half a file. The writer holds an ``flock`` on its temp file (named ``.<name>.<random>.tmp``)
until the rename; a temp file that nobody holds and that has not been touched for a while was
left by a killed writer, and the next write to the same destination removes it. The index
compare-and-swap holds an exclusive ``flock`` on a lock file beside the index while it compares
the current content with the version read and renames the new content into place; the kernel
drops the locks of a process that dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from onceflow.errors import RegistryError
from onceflow.io import sha256_bytes, sha256_file
from onceflow.registry.base import INDEX, IndexConflict

log = logging.getLogger(__name__)
STALE_TMP_AGE_S = 10.0  # an unlocked temp file untouched this long belongs to a dead writer


def remove_stale_temps(dest: Path, *, min_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Remove ``.<dest name>.*.tmp`` files beside ``dest`` that no live writer holds."""
    removed = []
    now = time.time()
    for tmp in dest.parent.glob(f".{dest.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime < min_age_s:
                continue
            with open(tmp, "rb") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer?
                tmp.unlink()
        except OSError as err:  # locked (EWOULDBLOCK), or gone meanwhile
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.ENOENT):
                raise
            continue
        removed.append(tmp)
    if removed:
        log.info("removed %d stale temp file(s) of killed uploads beside %s", len(removed), dest)
    return removed


@contextlib.contextmanager
def _temp_beside(dest: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A locked temp file beside ``dest``, renamed over ``dest`` when the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)
            yield out, tmp
            out.flush()
            os.fsync(out.fileno())
            os.replace(tmp, dest)  # still locked: a cleaner can never take a live temp file
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class FileStore:
    """A registry rooted at a local directory (created on first write)."""

    def __init__(self, root: Path, uri: str) -> None:
        self.root = root
        self.uri = uri

    def _path(self, key: str) -> Path:
        # Keys come from store.object_key (validated parts); this is a second line of defence.
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise RegistryError(f"{self.uri}: key {key!r} escapes the registry root")
        return path

    def _fail(self, what: str, key: str, err: OSError) -> RegistryError:
        return RegistryError(f"{self.uri}/{key}: cannot {what} ({err.strerror or err})")

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise self._fail("read", key, err) from None
        return data, sha256_bytes(data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stored_sha256(self, key: str) -> str | None:
        path = self._path(key)
        try:
            return sha256_file(path) if path.is_file() else None
        except OSError as err:
            raise self._fail("read", key, err) from None

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        try:
            with _temp_beside(self._path(key)) as (out, tmp), open(path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                if sha256_file(tmp) != sha256:
                    raise RegistryError(f"{path}: changed while uploading (sha256 differs); retry")
        except OSError as err:
            raise self._fail("write", key, err) from None

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        path = self._path(key)
        try:
            with self._locked(path):
                current = self.read(key)
                current_token = None if current is None else current[1]
                if current_token != token:
                    raise IndexConflict(key)
                with _temp_beside(path) as (out, _):
                    out.write(data)
        except OSError as err:
            raise self._fail("write", key, err) from None

    def download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise RegistryError(f"{self.uri}/{key}: not found in the registry") from None
        except OSError as err:
            raise self._fail("read", key, err) from None

    def list_dirs(self) -> list[str]:
        if not self.root.is_dir():
            raise RegistryError(
                f"{self.uri}: registry directory {self.root} does not exist (check --registry; "
                "it is created by the first `onceflow publish`)"
            )
        return sorted(p.name for p in self.root.iterdir() if (p / INDEX).is_file())
