"""A tiny search space, a random-weight supernet on disk and a synthetic latency table, so that
predictor and search tests take seconds on a shared 2-core machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from onceflow.io import write_json_atomic
from onceflow.latency.calibration import Calibration
from onceflow.latency.estimator import ESTIMATOR_FILE, estimator_json
from onceflow.latency.lut import LUT_FILE, Lut
from onceflow.latency.protocol import LatencyStats
from onceflow.predictor.encoding import layer_macs
from onceflow.supernet import SearchSpace
from onceflow.supernet.supernet import Supernet, save_supernet


def write_supernet(directory: Path, space: SearchSpace, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_supernet(Supernet(space), directory)
    return directory


def write_latency_dir(directory: Path, space: SearchSpace, target: str = "ort-cpu") -> Path:
    """A latency table whose entries are proportional to each layer's MACs (plus a constant),
    written in the latency stage's format."""
    entries = {
        s: LatencyStats.from_samples([0.01 + layer_macs(s) * 1e-6])
        for s in space.unique_layer_specs()
    }
    lut = Lut(entries, LatencyStats.from_samples([0.005]), meta={"space": space.to_json()})
    write_json_atomic(directory / LUT_FILE, lut.to_json())
    cal = Calibration("none", ("sum",), (1.0,))
    write_json_atomic(directory / ESTIMATOR_FILE, estimator_json(cal, target))
    return directory


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread and numpy's global RNG seeded, for each test here; both restored."""
    threads, rng_state = torch.get_num_threads(), np.random.get_state()
    torch.set_num_threads(1)
    np.random.seed(0)
    yield
    torch.set_num_threads(threads)
    np.random.set_state(rng_state)
