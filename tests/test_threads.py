"""Thread pools sized to the work: limits apply to torch, BLAS and OpenMP and are restored."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from onceflow.threads import _ENV, limit_threads, pool_sizes, set_threads


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """set_threads is for the rest of a process: these tests put back torch's count, the BLAS
    and OpenMP pools and the thread variables afterwards."""
    torch_threads, env = torch.get_num_threads(), {k: os.environ.get(k) for k in _ENV}
    with threadpool_limits(limits=None):  # restores every pool's size on exit
        yield
    torch.set_num_threads(torch_threads)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_limit_threads_caps_every_pool_and_restores() -> None:
    set_threads(2)
    try:
        assert pool_sizes()["blas"] == 2 and torch.get_num_threads() == 2
        with limit_threads(1):
            np.ones((64, 64)) @ np.ones((64, 64))
            assert set(pool_sizes().values()) == {1}
        assert pool_sizes()["blas"] == 2 and torch.get_num_threads() == 2
    finally:
        set_threads(1)


def test_set_threads_caps_torch_and_blas() -> None:
    set_threads(1)
    sizes = pool_sizes()
    assert sizes["torch"] == 1 and sizes["blas"] == 1 and sizes.get("openmp", 1) == 1
