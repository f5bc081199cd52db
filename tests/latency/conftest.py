"""Tiny search spaces and protocols so latency tests take seconds on a shared 2-core machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onceflow.config import StageConfig, SupernetConfig
from onceflow.latency.protocol import MeasureProtocol
from onceflow.supernet import SearchSpace


def tiny_supernet_config() -> SupernetConfig:
    return SupernetConfig(
        resolutions=[12, 16],
        kernels=[3, 5],
        expands=[2.0, 3.0],
        depths=[1, 2],
        widths=[0.5, 1.0],
        stem_channels=8,
        head_channels=32,
        stages=[
            StageConfig(channels=8, stride=1),
            StageConfig(channels=16, stride=2, se=True, act="hswish"),
        ],
    )


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace(tiny_supernet_config(), in_channels=1, n_classes=10, image_size=28)


@pytest.fixture(scope="session")
def default_space() -> SearchSpace:
    """The default params' space (bigger; for pure-numpy tests only)."""
    return SearchSpace(SupernetConfig(), in_channels=1, n_classes=10, image_size=28)


@pytest.fixture
def quick_protocol() -> MeasureProtocol:
    return MeasureProtocol(warmup=2, repeats=5, number=1, interleave=True, seed=0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    np.seterr(all="raise")
