"""The search space: the set of subnets a supernet holds, as categorical dimensions.

Network shape (MobileNetV3 style)::

    stem (conv 3x3, BN, act) -> stages of MBConv blocks -> head (1x1 conv, BN, act, pool, linear)

Elastic dimensions: input ``resolution``; per stage ``depth`` (active blocks are the first ``d``,
the rest are skipped) and ``width`` (multiplier on the stage's output channels); per block
position ``kernel`` (depthwise kernel size) and ``expand`` (mid channels = expand x active input
channels). Choices are sorted ascending, so choice index 0 is the smallest.

Dimension names (in encoding order): ``resolution``, ``depth.s<i>``, ``width.s<i>``,
``kernel.b<j>``, ``expand.b<j>`` with 0-based stage ``i`` and global block position ``j``.

:class:`SearchSpace` validates, canonicalizes, encodes and samples :class:`~onceflow.supernet
.arch.Arch` values; it inherits layer shapes from :mod:`onceflow.supernet.geometry` and the
layer specs of its subnets from :mod:`onceflow.supernet.specs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onceflow.config import SupernetConfig
from onceflow.errors import ConfigError
from onceflow.supernet.arch import Arch, format_choice
from onceflow.supernet.geometry import StageGeometry, resolve_stages
from onceflow.supernet.specs import SpaceLayerSpecs

SPACE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Dimension:
    """One categorical dimension of the space as the search engine sees it."""

    name: str  # e.g. "resolution", "depth.s2", "kernel.b5"
    choices: tuple  # allowed values, ascending; an encoding stores the index into this


class SearchSpace(SpaceLayerSpecs):
    """The set of subnets a supernet holds, built from params ``supernet`` plus data shape."""

    def __init__(
        self,
        config: SupernetConfig,
        in_channels: int,
        n_classes: int,
        image_size: int | None = None,
    ) -> None:
        self.config = config
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.image_size = image_size
        if image_size is not None and max(config.resolutions) > image_size:
            raise ConfigError(
                f"params.yaml supernet.resolutions: {max(config.resolutions)} exceeds the data's "
                f"image size {image_size}; use resolutions <= {image_size}"
            )
        self.resolutions = tuple(config.resolutions)
        self.kernels = tuple(config.kernels)
        self.expands = tuple(float(e) for e in config.expands)
        self.widths = tuple(float(w) for w in config.widths)
        self.stages: tuple[StageGeometry, ...] = resolve_stages(config)
        self.n_blocks = sum(s.max_depth for s in self.stages)
        # block position -> stage index
        self.block_stage = tuple(i for i, s in enumerate(self.stages) for _ in range(s.max_depth))
        self._dims = self._build_dimensions()

    # ------------------------------------------------------------------ dimensions / encoding
    @property
    def n_stages(self) -> int:
        return len(self.stages)

    def _build_dimensions(self) -> list[Dimension]:
        dims = [Dimension("resolution", self.resolutions)]
        dims += [Dimension(f"depth.s{i}", s.depths) for i, s in enumerate(self.stages)]
        dims += [Dimension(f"width.s{i}", self.widths) for i in range(self.n_stages)]
        dims += [Dimension(f"kernel.b{j}", self.kernels) for j in range(self.n_blocks)]
        dims += [Dimension(f"expand.b{j}", self.expands) for j in range(self.n_blocks)]
        return dims

    def dimensions(self) -> list[Dimension]:
        """Categorical dimensions in encoding order."""
        return list(self._dims)

    def is_active(self, arch: Arch, block: int) -> bool:
        """Whether block position ``block`` runs in ``arch`` (False: skipped by depth)."""
        s = self.block_stage[block]
        return block - self.stages[s].first_block < arch.depths[s]

    def active_blocks(self, arch: Arch) -> list[int]:
        return [j for j in range(self.n_blocks) if self.is_active(arch, j)]

    def _values(self, arch: Arch) -> list:
        return [arch.resolution, *arch.depths, *arch.widths, *arch.kernels, *arch.expands]

    def validate(self, arch: Arch) -> None:
        """Raise ConfigError naming the first offending dimension and its allowed values."""
        for field, n in (
            ("depths", self.n_stages),
            ("widths", self.n_stages),
            ("kernels", self.n_blocks),
            ("expands", self.n_blocks),
        ):
            got = len(getattr(arch, field))
            if got != n:
                raise ConfigError(f"arch {arch}: {field} has {got} entries, the space needs {n}")
        for dim, value in zip(self._dims, self._values(arch), strict=True):
            if value not in dim.choices:
                allowed = ", ".join(format_choice(c) for c in dim.choices)
                got = format_choice(value)
                raise ConfigError(
                    f"arch {arch}: {dim.name}={got} is not allowed; choose one of {allowed}"
                )

    def canonical(self, arch: Arch) -> Arch:
        """The same network with skipped blocks' kernel/expand set to the first choice."""
        ks = list(arch.kernels)
        es = list(arch.expands)
        for j in range(self.n_blocks):
            if not self.is_active(arch, j):
                ks[j], es[j] = self.kernels[0], self.expands[0]
        return Arch(arch.resolution, arch.depths, tuple(ks), tuple(es), arch.widths)

    def encode(self, arch: Arch) -> np.ndarray:
        """Choice index per dimension (int64, length len(dimensions())); skipped blocks -> 0."""
        self.validate(arch)
        arch = self.canonical(arch)
        return np.asarray(
            [d.choices.index(v) for d, v in zip(self._dims, self._values(arch), strict=True)],
            dtype=np.int64,
        )

    def encode_batch(self, archs: Sequence[Arch]) -> np.ndarray:
        out = np.zeros((len(archs), len(self._dims)), dtype=np.int64)
        for i, a in enumerate(archs):
            out[i] = self.encode(a)
        return out

    def decode(self, idx: Sequence[int] | np.ndarray) -> Arch:
        """Arch from choice indices (canonical: skipped blocks' choices are ignored)."""
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        if len(idx) != len(self._dims):
            raise ConfigError(
                f"encoded arch has {len(idx)} entries, the space has {len(self._dims)}"
            )
        vals = []
        for d, i in zip(self._dims, idx, strict=True):
            if not 0 <= i < len(d.choices):
                raise ConfigError(f"{d.name}: index {i} out of range 0..{len(d.choices) - 1}")
            vals.append(d.choices[i])
        s, b = self.n_stages, self.n_blocks
        arch = Arch(
            resolution=vals[0],
            depths=tuple(vals[1 : 1 + s]),
            widths=tuple(vals[1 + s : 1 + 2 * s]),
            kernels=tuple(vals[1 + 2 * s : 1 + 2 * s + b]),
            expands=tuple(vals[1 + 2 * s + b :]),
        )
        return self.canonical(arch)

    def size(self) -> int:
        """Number of distinct subnets (skipped blocks' choices do not count)."""
        per_block = len(self.kernels) * len(self.expands)
        total = len(self.resolutions)
        for st in self.stages:
            total *= len(self.widths) * sum(per_block**d for d in st.depths)
        return total

    # ------------------------------------------------------------------ sampling
    def _kind_of(self, dim: Dimension) -> str:
        return dim.name.split(".")[0]

    def sample(self, rng: np.random.Generator, elastic: Iterable[str] | None = None) -> Arch:
        """Uniform choice per dimension (canonical). ``elastic``: restrict sampling to these
        dimension kinds ("resolution", "depth", "width", "kernel", "expand"); others stay at
        their maximum (progressive shrinking). None = all elastic."""
        kinds = None if elastic is None else set(elastic)
        idx = [
            int(rng.integers(len(d.choices)))
            if kinds is None or self._kind_of(d) in kinds
            else len(d.choices) - 1
            for d in self._dims
        ]
        return self.decode(idx)

    def max_arch(self) -> Arch:
        return self.decode([len(d.choices) - 1 for d in self._dims])

    def min_arch(self, elastic: Iterable[str] | None = None) -> Arch:
        """Smallest subnet; with ``elastic``, smallest over those kinds only (others at max)."""
        kinds = None if elastic is None else set(elastic)
        return self.decode(
            [
                0 if kinds is None or self._kind_of(d) in kinds else len(d.choices) - 1
                for d in self._dims
            ]
        )

    def mid_arch(self) -> Arch:
        """The middle choice of every dimension (a fixed, medium-sized reference subnet)."""
        return self.decode([len(d.choices) // 2 for d in self._dims])

    # ------------------------------------------------------------------ serialization
    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": SPACE_FORMAT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "image_size": self.image_size,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchSpace:
        if d.get("format_version") != SPACE_FORMAT_VERSION:
            raise ConfigError(
                f"space.json format_version {d.get('format_version')!r} is not "
                f"{SPACE_FORMAT_VERSION}; retrain the supernet (dvc repro train_supernet)"
            )
        return cls(
            SupernetConfig.model_validate(d["config"]),
            in_channels=d["in_channels"],
            n_classes=d["n_classes"],
            image_size=d.get("image_size"),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(str(self.to_json()))

    def __repr__(self) -> str:
        return (
            f"SearchSpace(stages={self.n_stages}, blocks={self.n_blocks}, "
            f"size={self.size():.3e}, log10={math.log10(self.size()):.1f})"
        )
