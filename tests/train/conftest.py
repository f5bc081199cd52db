"""Training tests run at one torch thread (a shared 2-core machine), restored after each test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One torch thread for each test here (tests/conftest.py)."""
