"""``file://`` registry: a directory tree with the same layout as the S3 one.

Uploads are temp-file + fsync + rename, so a reader never sees half a file. The index
compare-and-swap holds an exclusive ``flock`` on a lock file beside it while it compares the
current content with the version read and renames the new content into place; the kernel
drops the lock when a process dies, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onceflow.errors import RegistryError
from onceflow.io import write_bytes_atomic
from onceflow.package.manifest import sha256_bytes, sha256_file
from onceflow.registry.store import INDEX, IndexConflict


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

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise RegistryError(f"{self.uri}/{key}: cannot read ({err.strerror})") from None
        return data, sha256_bytes(data)

    def stored_sha256(self, key: str) -> str | None:
        path = self._path(key)
        return sha256_file(path) if path.is_file() else None

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                if sha256_file(tmp) != sha256:
                    raise RegistryError(f"{path}: changed while uploading (sha256 differs); retry")
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as err:
            raise RegistryError(f"{self.uri}/{key}: cannot write ({err.strerror})") from None

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
                write_bytes_atomic(path, data)
        except OSError as err:
            raise RegistryError(f"{self.uri}/{key}: cannot write ({err.strerror})") from None

    def download(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise RegistryError(f"{self.uri}/{key}: not found in the registry") from None
        except OSError as err:
            raise RegistryError(f"{self.uri}/{key}: cannot read ({err.strerror})") from None

    def list_dirs(self) -> list[str]:
        if not self.root.is_dir():
            raise RegistryError(f"{self.uri}: registry directory {self.root} does not exist")
        return sorted(p.name for p in self.root.iterdir() if (p / INDEX).is_file())
