"""The ``train_supernet`` stage as one call (:func:`run`): train the elastic supernet (its
ranks too: the stage's own command line is relaunched as each, :func:`onceflow.stage.current`)
and return the model and metrics rank 0 writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onceflow import hostcache, stage
from onceflow.config import Params
from onceflow.metrics import supernet_headline
from onceflow.supernet import save_supernet
from onceflow.train.pipeline import TrainedSupernet, supernet_training


@dataclass(frozen=True)
class Paths:
    """Where ``train_supernet`` reads, logs each epoch (``live``) and checkpoints."""

    data: str
    live: str = field(metadata={"help": "DVCLive folder (one row per epoch)"})
    checkpoints: str | None = field(
        default=None, metadata={"help": "default: <onceflow cache>/checkpoints/supernet"}
    )


@dataclass(frozen=True)
class TrainOutputs:
    """What rank 0 writes: the supernet (``save``: models/supernet/) and its metrics."""

    trained: TrainedSupernet

    @property
    def details(self) -> dict[str, Any]:
        return self.trained.metrics

    @property
    def headline(self) -> dict[str, Any]:
        return supernet_headline(self.trained.metrics)

    def save(self, directory: Path) -> None:
        save_supernet(self.trained.model, directory)

    @property
    def summary(self) -> str:
        return f"supernet trained: {self.trained.metrics}"


def run(params: Params, paths: Paths) -> TrainOutputs | None:
    """Train (or join the ranks of) the supernet of ``params``; None where this process writes
    nothing (a rank other than 0, or the launcher of the ranks)."""
    command = stage.current()
    trained = supernet_training(
        params,
        data=paths.data,
        live=paths.live,
        checkpoints=paths.checkpoints or hostcache.checkpoints_dir(),
        outputs=(*command.outputs, paths.live),
        relaunch=(command.module, command.argv),
    )
    return None if trained is None else TrainOutputs(trained)
