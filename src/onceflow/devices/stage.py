"""The ``device_results@<target>`` stage as one call (:func:`run`): the target's imported
timings (or a header) and its transferred LUT (or a record of none), from ``devices/``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onceflow.config import Params
from onceflow.devices import device_results_text, device_transfer_text


@dataclass(frozen=True)
class Paths:
    """Where ``device_results@<target>`` reads."""

    target: str
    devices: str = field(metadata={"help": "the folder of imported timings (devices/)"})


@dataclass(frozen=True)
class DeviceFiles:
    """The two files the stage passes on (``--out``, ``--lut-out``); no metrics."""

    results: str
    transfer: str
    target: str
    headline: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> dict[str, str]:
        return {"out": self.results, "lut_out": self.transfer}

    @property
    def summary(self) -> str:
        return f"device_results@{self.target}: {self.results.count(chr(10)) - 1} timed subnet(s)"


def run(params: Params, paths: Paths) -> DeviceFiles:
    """This target's files from ``paths.devices``."""
    devices = Path(paths.devices)
    return DeviceFiles(
        device_results_text(params, paths.target, devices),
        device_transfer_text(params, paths.target, devices),
        paths.target,
    )
