"""What a store is, below every implementation: the index's object name, the conflict a
conditional write raises, the connection options (the ``publish`` config section) and the
:class:`Store` interface. The implementations (:mod:`.local`, :mod:`.s3`) and
:func:`.store.open_store` import from here, so nothing in the registry imports back up."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from onceflow.config import PublishConfig

__all__ = ["INDEX", "IndexConflict", "Store", "StoreOptions"]

INDEX = "index.json"


class IndexConflict(Exception):
    """A conditional write lost the race: the object changed since it was read. Retry."""


# How to talk to object storage (endpoint, region, attempts per request, timeouts): the
# validated ``publish`` section itself, not a copy of its fields.
StoreOptions = PublishConfig


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
