"""The ``publish`` stage as one call (:func:`run`): every package under the artifacts folder
to the registry ``publish.uri`` (:func:`~onceflow.registry.publish.run_publish`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from onceflow.config import Params
from onceflow.registry.publish import PublishRun, run_publish


@dataclass(frozen=True)
class Paths:
    """Where ``publish`` reads."""

    artifacts: str = field(metadata={"help": "artifacts/<target>/<model-id>/ packages"})


def run(params: Params, paths: Paths) -> PublishRun:
    """Publish every package under ``paths.artifacts`` to ``params.publish.uri``."""
    return run_publish(params.publish, paths.artifacts)
