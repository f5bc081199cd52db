"""Thread pools sized to the work: limits apply to torch, BLAS and OpenMP and are restored."""

from __future__ import annotations

import numpy as np
import torch

from onceflow.threads import limit_threads, pool_sizes, set_threads


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
