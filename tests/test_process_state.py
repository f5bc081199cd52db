"""No test leaves process-wide state changed for the tests after it.

The snapshot is taken when this module is imported (at collection, before any test runs); the
probe compares the process with it wherever it lands in the run: after the latency, training and
predictor tests in file order, anywhere under ``-p randomly``. A fixture that sets numpy's float
error mode, torch's thread count, numpy's global RNG, an environment variable, the working
directory or the root logger without restoring it makes the probe fail, naming what changed.
The subprocess test runs a latency test (whose fixture raises on float errors) and then the
probe in one process, so the ordering that once leaked is checked on every run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


# Set while a test runs, by pytest (capture handlers, the test's name) and by the autouse
# host_cache fixture (tests/conftest.py).
_PYTEST_HANDLERS = {"LogCaptureHandler", "_LiveLoggingNullHandler", "_FileHandler"}
_PYTEST_ENV = {"PYTEST_CURRENT_TEST", "ONCEFLOW_CACHE_DIR"}  # the second: host_cache, per test
# Variables libraries set when they load (Intel's OpenMP runtime, torch's inductor): never
# compared.
_BY_LIBRARIES_PREFIXES = ("KMP_", "TORCHINDUCTOR_")


def process_state() -> dict[str, object]:
    root = logging.getLogger()
    handlers = [type(h).__name__ for h in root.handlers]
    return {
        "numpy float errors": np.geterr(),
        "torch threads": torch.get_num_threads(),
        "cwd": os.getcwd(),
        "root logger level": root.level,
        "root logger handlers": [h for h in handlers if h not in _PYTEST_HANDLERS],
        "environment": {
            k: v
            for k, v in os.environ.items()
            if k not in _PYTEST_ENV and not k.startswith(_BY_LIBRARIES_PREFIXES)
        },
    }


_AT_IMPORT = process_state()


def _changes(before: dict[str, object], now: dict[str, object]) -> list[str]:
    out = []
    for key, old in before.items():
        new = now[key]
        if key == "environment":
            assert isinstance(old, dict) and isinstance(new, dict)
            for var in sorted(old.keys() | new.keys()):
                if old.get(var) != new.get(var):
                    out.append(f"env {var}: {old.get(var)!r} -> {new.get(var)!r}")
        elif old != new:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out


def test_no_earlier_test_left_process_state_changed() -> None:
    assert _changes(_AT_IMPORT, process_state()) == []


def test_a_latency_test_then_the_probe_in_one_process() -> None:
    """The latency fixture raises on float errors inside its tests only: a test run after one
    in the same process sees numpy's defaults again (it used to see ``raise`` everywhere)."""
    latency_test = "tests/latency/test_protocol.py::test_stats_from_samples"
    probe = "tests/test_process_state.py::test_no_earlier_test_left_process_state_changed"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         latency_test, probe],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout, proc.stdout[-2000:]
