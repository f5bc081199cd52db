"""Object storage behind the registry: one small interface, two implementations.

A store holds objects under keys like ``ort-cpu/r28-0123abcd4567/<revision>/model.onnx``
relative to the registry root (``file://<dir>`` or ``s3://<bucket>/<prefix>``). The registry
needs exactly these things from it: upload a file, read an object with a version token, tell
whether an object exists and hash what it really holds, replace an object only if its version
token is still the one read (compare-and-swap; the index is written this way), and download an
object to a local file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from onceflow.errors import RegistryError
from onceflow.package.manifest import MANIFEST, PAYLOAD_FILES, check_name
from onceflow.uri import URIError, check_endpoint_url, parse_registry_uri, redact

__all__ = ["INDEX", "IndexConflict", "Store", "StoreOptions", "object_key", "open_store"]
__all__ += ["parse_uri", "redact", "check_revision"]

INDEX = "index.json"
_OBJECT_NAMES = frozenset((*PAYLOAD_FILES, MANIFEST, INDEX))
_REVISION_RE = re.compile(r"^[0-9a-f]{8,64}$")


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

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    def stored_sha256(self, key: str) -> str | None:
        """The sha256 of the bytes really stored under ``key`` (None if there is no object)."""

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


def check_revision(value: str) -> str:
    """Validate a revision id (hex, from the manifest's sha256)."""
    if not isinstance(value, str) or not _REVISION_RE.match(value):
        raise RegistryError(
            f"invalid revision {redact(str(value))!r}: expected 8-64 lower-case hex digits "
            "(see `onceflow ls --all-revisions`)"
        )
    return value


def object_key(target: str, *parts: str, revision: str | None = None) -> str:
    """Join validated key parts: ``target[/model_id[/revision]]/name``.

    ``revision=None`` is the layout of format-1 registries (files directly under the model id).
    Rejects anything that could escape the registry root.
    """
    *dirs, name = parts
    check_name("target", target)
    for d in dirs:
        check_name("model id", d)
    if revision is not None:
        if not dirs:
            raise RegistryError("a revision needs a model id")
        dirs = [*dirs, check_revision(revision)]
    if name not in _OBJECT_NAMES:
        raise RegistryError(f"invalid object name {name!r}: allowed {sorted(_OBJECT_NAMES)}")
    return "/".join((target, *dirs, name))


def parse_uri(uri: str) -> tuple[str, str, str]:
    """Split a registry URI into (scheme, location, prefix); RegistryError if it is not one.

    ``file://registry`` -> ("file", "registry", ""): a directory, relative to the working
    directory unless absolute (the CLI resolves it against the project root first).
    ``s3://bucket/a/b`` -> ("s3", "bucket", "a/b"). See :mod:`onceflow.uri`.
    """
    try:
        parsed = parse_registry_uri(uri)
    except URIError as err:
        raise RegistryError(str(err)) from None
    return parsed.scheme, parsed.location, parsed.prefix


# Set by the flows for the stages they run in a workspace: the user's checkout, against which a
# relative ``file://`` registry resolves (the workspace is removed when the run ends).
PROJECT_ROOT_ENV = "ONCEFLOW_PROJECT_ROOT"


def project_root(start: Path | None = None) -> Path | None:
    """The project a relative registry belongs to: ``$ONCEFLOW_PROJECT_ROOT`` when set, else the
    nearest folder at or above ``start`` (default: the cwd) holding dvc.yaml and params.yaml."""
    explicit = os.environ.get(PROJECT_ROOT_ENV)
    if explicit:
        return Path(explicit).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    return None


def resolve_registry(uri: str, start: Path | None = None) -> str:
    """A relative ``file://`` URI made absolute against :func:`project_root` (else the cwd), so
    every command and stage, in the checkout or in a flow's workspace, means the same folder."""
    scheme, location, _ = parse_uri(uri)
    if scheme != "file" or Path(location).is_absolute():
        return uri
    base = project_root(start) or (start or Path.cwd()).resolve()
    return f"file://{base / location}"


def open_store(uri: str, options: StoreOptions | None = None) -> Store:
    """The store for a registry URI (``file://...`` or ``s3://...``)."""
    scheme, location, prefix = parse_uri(uri)
    if options is not None and options.endpoint_url is not None:
        try:
            check_endpoint_url(options.endpoint_url)
        except URIError as err:
            raise RegistryError(str(err)) from None
    if scheme == "file":
        from onceflow.registry.local import FileStore

        return FileStore(Path(location), uri=f"file://{location}")
    from onceflow.registry.s3 import S3Store

    return S3Store(location, prefix, options or StoreOptions())
