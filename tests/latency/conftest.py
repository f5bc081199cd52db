"""Tiny search spaces and protocols so latency tests take seconds on a shared 2-core machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onceflow.config import MeasureProtocolConfig
from onceflow.latency.protocol import MeasureProtocol


def make_protocol(*, seed: int = 0, clock: str = "wall", **settings: int | bool) -> MeasureProtocol:
    """The schema's protocol with ``settings`` changed (one session unless set: quick)."""
    cfg = MeasureProtocolConfig(**{"sessions": 1, **settings})
    return MeasureProtocol.from_config(cfg, seed=seed, clock=clock)


@pytest.fixture
def quick_protocol() -> MeasureProtocol:
    return make_protocol(warmup=2, repeats=5, number=1, interleave=True, seed=0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    np.seterr(all="raise")
