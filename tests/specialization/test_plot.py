"""The specialization figure stays within the report's 1280 px page for any number of targets."""

from __future__ import annotations

import struct

import pytest

from onceflow.specialization.plot import specialization_png


def _details(names: list[str]) -> dict:
    cells = [
        {"host": h, "source": s, "slot": i, "host_budget_ms": 1.0 + i,
         "host_pick_latency_ms": 0.9 + i, "host_pick_accuracy": 0.85 + i / 100,
         "source_latency_on_host_ms": 1.1 + i, "source_accuracy_on_host": 0.84 + i / 100}
        for h in names for s in names if s != h for i in range(3)
    ]  # fmt: skip
    return {"targets": [{"name": n} for n in names], "cells": cells}


@pytest.mark.parametrize("n", [2, 3, 4])
def test_the_figure_is_at_most_1280_px_wide(n: int) -> None:
    png = specialization_png(_details([f"t{i}" for i in range(n)]), "verdict")
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR
    assert width <= 1280
    assert height > 600 if n > 3 else height < 600  # a fourth target starts a second row
