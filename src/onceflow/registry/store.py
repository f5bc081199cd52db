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
from pathlib import Path

from onceflow.errors import RegistryError
from onceflow.package.manifest import MANIFEST, PAYLOAD_FILES, check_name
from onceflow.registry.base import INDEX, IndexConflict, Store, StoreOptions
from onceflow.uri import URIError, check_endpoint_url, parse_registry_uri, redact

__all__ = ["INDEX", "IndexConflict", "Store", "StoreOptions", "object_key", "open_store"]
__all__ += ["parse_uri", "redact", "check_revision"]

_OBJECT_NAMES = frozenset((*PAYLOAD_FILES, MANIFEST, INDEX))
_REVISION_RE = re.compile(r"^[0-9a-f]{8,64}$")


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
