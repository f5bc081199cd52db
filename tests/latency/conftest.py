"""Tiny search spaces and protocols so latency tests take seconds on a shared 2-core machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onceflow.latency.protocol import MeasureProtocol


@pytest.fixture
def quick_protocol() -> MeasureProtocol:
    return MeasureProtocol(warmup=2, repeats=5, number=1, interleave=True, seed=0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
    np.seterr(all="raise")
