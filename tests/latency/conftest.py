"""Tiny search spaces and protocols so latency tests take seconds on a shared 2-core machine."""

from __future__ import annotations

from collections.abc import Iterator

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
def _one_thread() -> Iterator[None]:
    """One torch thread and float errors raising, for each latency test only: both are restored
    afterwards (np.seterr here once made every later test in the process raise on float errors)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with np.errstate(all="raise"):
            yield
    finally:
        torch.set_num_threads(threads)
