"""Object storage behind the registry: one small interface, two implementations.

A store holds objects under keys like ``ort-cpu/r28-0123abcd4567/model.onnx`` relative to the
registry root (``file://<dir>`` or ``s3://<bucket>/<prefix>``). The registry needs exactly four
things from it: upload a file (recording its sha256), read an object with a version token,
replace an object only if its version token is still the one read (compare-and-swap; the index
is written this way), and download an object to a local file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from onceflow.errors import RegistryError
from onceflow.package.manifest import MANIFEST, PAYLOAD_FILES, check_name

INDEX = "index.json"
_OBJECT_NAMES = frozenset((*PAYLOAD_FILES, MANIFEST, INDEX))
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class IndexConflict(Exception):
    """A conditional write lost the race: the object changed since it was read. Retry."""


@dataclass(frozen=True)
class StoreOptions:
    """How to talk to object storage. None means the standard AWS chain (env, config files)."""

    endpoint_url: str | None = None  # e.g. http://minio:9000; default AWS_ENDPOINT_URL(_S3)
    region: str | None = None  # default AWS_REGION / AWS_DEFAULT_REGION / us-east-1
    max_attempts: int = 5  # total attempts per S3 request (botocore standard retry mode)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0


class Store(Protocol):
    uri: str  # display form of the registry root; never holds credentials

    def read(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and version token, or None if it does not exist."""

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 recorded for an uploaded object, or None if it does not exist."""

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Upload ``path`` to ``key`` (replacing it), recording ``sha256``."""

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        """Write ``data`` only if the object's version is ``token`` (None: only if absent).

        Raises IndexConflict when it is not.
        """

    def download(self, key: str, dest: Path) -> None:
        """Copy the object to the local file ``dest``; RegistryError if it does not exist."""

    def list_dirs(self) -> list[str]:
        """Names of the top-level 'directories' (targets) under the registry root."""


def object_key(*parts: str) -> str:
    """Join validated key parts: ``target[/model_id]/name``. Rejects anything that could escape."""
    *dirs, name = parts
    for i, d in enumerate(dirs):
        check_name("target" if i == 0 else "model id", d)
    if name not in _OBJECT_NAMES:
        raise RegistryError(f"invalid object name {name!r}: allowed {sorted(_OBJECT_NAMES)}")
    return "/".join((*dirs, name))


def redact(text: str) -> str:
    """Remove credentials that could leak into a message: env secrets and URL user-info."""
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def parse_uri(uri: str) -> tuple[str, str, str]:
    """Split a registry URI into (scheme, location, prefix).

    ``file://registry`` -> ("file", "registry", ""): a directory, relative to the working
    directory unless absolute (``file:///srv/registry``). ``s3://bucket/a/b`` -> ("s3", "bucket",
    "a/b").
    """
    if not isinstance(uri, str) or "://" not in uri:
        raise RegistryError(
            f"registry URI {redact(str(uri))!r}: expected file://<dir> or s3://<bucket>[/<prefix>]"
        )
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        if not rest or "\0" in rest:
            raise RegistryError(
                f"registry URI {uri!r}: file:// needs a directory, e.g. file://registry"
            )
        return "file", rest, ""
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET_RE.match(bucket):
            raise RegistryError(
                f"registry URI {redact(uri)!r}: {bucket!r} is not a valid S3 bucket name"
            )
        for part in prefix.split("/") if prefix else ():
            if not _PREFIX_PART_RE.match(part):
                raise RegistryError(
                    f"registry URI {redact(uri)!r}: prefix part {part!r} is not allowed "
                    "(letters, digits, '.', '_', '-'; no empty parts or '..')"
                )
        return "s3", bucket, prefix
    raise RegistryError(
        f"registry URI {redact(uri)!r}: unsupported scheme {scheme!r} (use file:// or s3://)"
    )


def open_store(uri: str, options: StoreOptions | None = None) -> Store:
    """The store for a registry URI (``file://...`` or ``s3://...``)."""
    scheme, location, prefix = parse_uri(uri)
    if scheme == "file":
        from onceflow.registry.local import FileStore

        return FileStore(Path(location), uri=uri)
    from onceflow.registry.s3 import S3Store

    return S3Store(location, prefix, options or StoreOptions())
