"""Training checkpoints: atomic writes, checksummed, weights_only loads, fallback past a
corrupt newest file.

Files are ``<dir>/ckpt-<global step, 8 digits>.pt``; the newest ``keep`` are kept. Each file is
one header line ``onceflow-checkpoint sha256=<hex>`` followed by the ``torch.save`` payload the
digest covers: a flipped bit anywhere in the payload (which ``torch.load`` would often read
without complaint, handing back corrupted weights) fails the check on load, and the file is
reported and skipped, never loaded. The payload is a dict of tensors and plain values only (see
``train.resume``), so ``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from onceflow.io import sha256_bytes, write_bytes_atomic

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")
_HEADER = re.compile(rb"^onceflow-checkpoint sha256=([0-9a-f]{64})\n")


class CorruptCheckpoint(ValueError):
    """The file's digest header is missing or does not match its payload."""


def encode_state(state: dict[str, Any]) -> bytes:
    """A checkpoint's payload: ``torch.save`` of ``state`` (also what ranks send each other)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def decode_state(payload: bytes, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state a payload holds: tensors and plain values only (``weights_only``)."""
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file: digest header line + ``torch.save`` payload."""
    payload = encode_state(state)
    return b"onceflow-checkpoint sha256=%s\n" % sha256_bytes(payload).encode() + payload


def verified_payload(blob: bytes) -> bytes:
    """The payload of a checkpoint file, after checking it against its digest header."""
    m = _HEADER.match(blob)
    if m is None:
        raise CorruptCheckpoint("no onceflow-checkpoint digest header")
    payload = blob[m.end() :]
    if sha256_bytes(payload).encode() != m.group(1):
        raise CorruptCheckpoint("sha256 mismatch: the file is corrupt")
    return payload


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    directory: str | os.PathLike[str], state: dict[str, Any], step: int, keep: int = 3
) -> Path:
    """Write ``state`` atomically as the checkpoint of global ``step``; prune to ``keep``."""
    path = write_bytes_atomic(Path(directory) / f"ckpt-{step:08d}.pt", encode_checkpoint(state))
    for old in checkpoint_files(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint whose digest verifies and that loads; a corrupt one is skipped
    with a warning naming it (it is never loaded). None if none."""
    for path in reversed(checkpoint_files(directory)):
        try:
            state = decode_state(verified_payload(path.read_bytes()), map_location)
        except (
            CorruptCheckpoint,
            RuntimeError,
            EOFError,
            OSError,
            pickle.UnpicklingError,
            zipfile.BadZipFile,
        ) as err:
            log.warning(
                "checkpoint %s is unreadable (%s); not loaded: falling back to the previous one "
                "(or starting over)",
                path,
                str(err).splitlines()[0] if str(err) else type(err).__name__,
            )
            continue
        if not isinstance(state, dict) or "model" not in state:
            log.warning("checkpoint %s has no model state; falling back to the previous one", path)
            continue
        return state, path
    return None


def clear_checkpoints(directory: str | os.PathLike[str]) -> None:
    for p in checkpoint_files(directory):
        p.unlink(missing_ok=True)
