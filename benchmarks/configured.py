"""The input a benchmark's random-init supernet takes: what the configured data would give."""

from __future__ import annotations

from onceflow.config import KNOWN_SOURCES, Params
from onceflow.supernet import SearchSpace


def configured_space(
    params: Params, channels: int | None = None, classes: int | None = None
) -> SearchSpace:
    """The search space for the configured data without reading it: its channels (the
    source's, or ``data.channels``), classes and largest resolution. An image folder's class
    count is in its files: pass ``classes``."""
    data = params.data
    channels = channels or data.channels or (3 if data.source == "cifar10" else 1)
    classes = classes or KNOWN_SOURCES.get(data.source, (0, 0))[1]
    if not classes:
        raise ValueError(f"data.source {data.source}: its class count is in its files; pass it")
    return SearchSpace(params.supernet, channels, classes, max(params.supernet.resolutions))
