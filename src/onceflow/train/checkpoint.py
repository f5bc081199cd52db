"""Training checkpoints: atomic writes, weights_only loads, fallback past a corrupt newest file.

Files are ``<dir>/ckpt-<global step, 8 digits>.pt``; the newest ``keep`` are kept. A checkpoint
is a dict of tensors and plain values only (see ``train.loop``), so ``torch.load(...,
weights_only=True)`` reads it.
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

from onceflow.io import write_bytes_atomic

log = logging.getLogger(__name__)

_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


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
    buf = io.BytesIO()
    torch.save(state, buf)
    path = write_bytes_atomic(Path(directory) / f"ckpt-{step:08d}.pt", buf.getvalue())
    for old in checkpoint_files(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that loads; a corrupt one is skipped with a warning. None if none."""
    for path in reversed(checkpoint_files(directory)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
            log.warning(
                "checkpoint %s is unreadable (%s); falling back to the previous one",
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
