"""The ``prepare`` stage as one call (:func:`run`): the dataset named in params, split,
validated (:func:`~onceflow.data.prepare.prepare_dataset`)."""

from __future__ import annotations

from dataclasses import dataclass

from onceflow.config import Params
from onceflow.data.prepare import Prepared, prepare_dataset


@dataclass(frozen=True)
class Paths:
    """``prepare`` reads only what params name (``data.source``, ``data.path``)."""


def run(params: Params, paths: Paths) -> Prepared:
    """Read, split and validate the dataset of ``params.data``."""
    return prepare_dataset(params.data, params.base.seed)
