"""One subnet of the search space as a value: :class:`Arch`, its JSON form and its compact name.

An arch is the common currency of every stage (search selects them, the predictor and the
latency estimator score them, packaging ships them). It knows nothing of the space it came
from: :meth:`~onceflow.supernet.space.SearchSpace.validate` checks one against a space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onceflow.errors import ConfigError


def format_choice(x: float) -> str:
    """A choice as the compact name and error messages write it (``1``, ``0.75``, ``3``)."""
    return f"{x:g}"


@dataclass(frozen=True)
class Arch:
    """One subnet: the value every stage passes around. Hashable and JSON round-trippable.

    ``kernels``/``expands`` have one entry per block position (n_blocks = sum of stage max
    depths); entries of skipped blocks (beyond a stage's depth) do not change the network.
    """

    resolution: int  # input side length in pixels
    depths: tuple[int, ...]  # active blocks per stage
    kernels: tuple[int, ...]  # depthwise kernel size per block position
    expands: tuple[float, ...]  # expand ratio per block position
    widths: tuple[float, ...]  # output-width multiplier per stage

    def __post_init__(self) -> None:
        # Normalize types so Arch(…lists…) and JSON-loaded archs hash and compare equal.
        object.__setattr__(self, "resolution", int(self.resolution))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        object.__setattr__(self, "expands", tuple(float(e) for e in self.expands))
        object.__setattr__(self, "widths", tuple(float(w) for w in self.widths))

    def to_json(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "depths": list(self.depths),
            "kernels": list(self.kernels),
            "expands": list(self.expands),
            "widths": list(self.widths),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Arch:
        try:
            return cls(
                resolution=d["resolution"],
                depths=d["depths"],
                kernels=d["kernels"],
                expands=d["expands"],
                widths=d["widths"],
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(
                f"arch JSON needs resolution, depths, kernels, expands, widths: {err!r} in {d!r}"
            ) from None

    def __str__(self) -> str:
        """Compact form, e.g. ``r28-d2_3-w1_0.75-k3_5_7_3_5-e4_6_3_3_6`` (see :meth:`parse`)."""
        return (
            f"r{self.resolution}"
            f"-d{'_'.join(str(d) for d in self.depths)}"
            f"-w{'_'.join(format_choice(w) for w in self.widths)}"
            f"-k{'_'.join(str(k) for k in self.kernels)}"
            f"-e{'_'.join(format_choice(e) for e in self.expands)}"
        )

    @classmethod
    def parse(cls, s: str) -> Arch:
        """Inverse of ``str(arch)``."""
        try:
            parts = dict((p[0], p[1:]) for p in s.strip().split("-"))
            return cls(
                resolution=int(parts["r"]),
                depths=tuple(int(x) for x in parts["d"].split("_")),
                widths=tuple(float(x) for x in parts["w"].split("_")),
                kernels=tuple(int(x) for x in parts["k"].split("_")),
                expands=tuple(float(x) for x in parts["e"].split("_")),
            )
        except (KeyError, ValueError, IndexError):
            raise ConfigError(
                f"cannot parse arch string {s!r}: expected r<res>-d<depths>-w<widths>-k<kernels>"
                "-e<expands> with '_'-separated values, e.g. r28-d2_2-w1_0.75-k3_5_3_7-e4_6_3_3"
            ) from None
