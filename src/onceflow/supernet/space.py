"""The search space as data: architectures (:class:`Arch`), their categorical encoding for search,
and the static layer signatures (:class:`LayerSpec`) that latency tables are built from.

Network shape (MobileNetV3 style)::

    stem (conv 3x3, BN, act) -> stages of MBConv blocks -> head (1x1 conv, BN, act, pool, linear)

Elastic dimensions: input ``resolution``; per stage ``depth`` (active blocks are the first ``d``,
the rest are skipped) and ``width`` (multiplier on the stage's output channels); per block
position ``kernel`` (depthwise kernel size) and ``expand`` (mid channels = expand x active input
channels). Choices are sorted ascending, so choice index 0 is the smallest.

Dimension names (in encoding order): ``resolution``, ``depth.s<i>``, ``width.s<i>``,
``kernel.b<j>``, ``expand.b<j>`` with 0-based stage ``i`` and global block position ``j``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from onceflow.config import SupernetConfig
from onceflow.errors import ConfigError

SPACE_FORMAT_VERSION = 1


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to a multiple of ``divisor`` (>= divisor), never dropping below 90%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded (k//2) convolution with an odd kernel."""
    return (size - 1) // stride + 1


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Dimension:
    """One categorical dimension of the space as the search engine sees it."""

    name: str  # e.g. "resolution", "depth.s2", "kernel.b5"
    choices: tuple  # allowed values, ascending; an encoding stores the index into this


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
            f"-w{'_'.join(_fmt(w) for w in self.widths)}"
            f"-k{'_'.join(str(k) for k in self.kernels)}"
            f"-e{'_'.join(_fmt(e) for e in self.expands)}"
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


@dataclass(frozen=True)
class LayerSpec:
    """Everything that determines one static layer of an extracted subnet (its latency key).

    kind "stem": conv(kernel, stride) in_ch->out_ch, BN, act.
    kind "block": MBConv: 1x1 in_ch->mid_ch, BN, act; depthwise kxk stride, BN, act;
      [SE mid_ch->se_ch->mid_ch]; 1x1 mid_ch->out_ch, BN; + input if ``residual``.
    kind "head": 1x1 in_ch->mid_ch, BN, act; global average pool; linear mid_ch->out_ch.
    Inputs are (N, in_ch, in_res, in_res); ``out_res`` is the output side length.
    """

    kind: str  # "stem" | "block" | "head"
    in_res: int
    in_ch: int
    out_ch: int
    mid_ch: int  # block: expanded channels; head: channels of the 1x1 conv; stem: = out_ch
    kernel: int
    stride: int
    se: bool
    act: str  # "relu" | "hswish"
    se_ch: int = 0  # SE squeeze channels (0 without SE)
    residual: bool = False  # block adds its input to its output

    @property
    def out_res(self) -> int:
        return 1 if self.kind == "head" else conv_out(self.in_res, self.stride)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerSpec:
        return cls(**d)


@dataclass(frozen=True)
class _Stage:
    """Resolved stage geometry."""

    channels: int  # at width 1.0
    stride: int
    se: bool
    act: str
    depths: tuple[int, ...]  # allowed depths, ascending
    first_block: int  # global index of the stage's first block position

    @property
    def max_depth(self) -> int:
        return self.depths[-1]


class SearchSpace:
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
        stages = []
        first = 0
        for st in config.stages:
            depths = tuple(st.depths if st.depths is not None else config.depths)
            stages.append(_Stage(st.channels, st.stride, st.se, st.act, depths, first))
            first += depths[-1]
        self.stages: tuple[_Stage, ...] = tuple(stages)
        self.n_blocks = first
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
                allowed = ", ".join(_fmt(c) for c in dim.choices)
                raise ConfigError(
                    f"arch {arch}: {dim.name}={_fmt(value)} is not allowed; choose one of {allowed}"
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

    # ------------------------------------------------------------------ geometry
    def stage_channels(self, stage: int, width: float) -> int:
        """Output channels of ``stage`` at width multiplier ``width``."""
        return make_divisible(self.stages[stage].channels * width, self.config.channel_divisor)

    def stem_channels(self) -> int:
        return self.config.stem_channels

    def mid_channels(self, in_ch: int, expand: float) -> int:
        return make_divisible(in_ch * expand, self.config.channel_divisor)

    def se_channels(self, mid_ch: int) -> int:
        return make_divisible(mid_ch / self.config.se_reduction, self.config.channel_divisor)

    def block_in_res(self, block: int, resolution: int) -> int:
        """Input side length of block position ``block`` for input ``resolution``."""
        r = conv_out(resolution, self.config.stem_stride)
        s = self.block_stage[block]
        for i in range(s):
            r = conv_out(r, self.stages[i].stride)
        if block > self.stages[s].first_block:
            r = conv_out(r, self.stages[s].stride)
        return r

    def final_res(self, resolution: int) -> int:
        r = conv_out(resolution, self.config.stem_stride)
        for st in self.stages:
            r = conv_out(r, st.stride)
        return r

    # ------------------------------------------------------------------ layer specs
    def stem_spec(self, resolution: int) -> LayerSpec:
        c = self.stem_channels()
        return LayerSpec(
            kind="stem",
            in_res=int(resolution),
            in_ch=self.in_channels,
            out_ch=c,
            mid_ch=c,
            kernel=3,
            stride=self.config.stem_stride,
            se=False,
            act=self.config.stem_act,
        )

    def block_spec(
        self,
        b: int,
        resolution: int,
        width_in: float,
        width_out: float,
        kernel: int,
        expand: float,
    ) -> LayerSpec:
        """Spec of block position ``b``. ``width_in`` is the previous stage's width for a stage's
        first block (ignored for block 0, whose input is the fixed-width stem), else the same
        stage's width (== ``width_out``)."""
        s = self.block_stage[b]
        st = self.stages[s]
        first = b == st.first_block
        if b == 0:
            in_ch = self.stem_channels()
        elif first:
            in_ch = self.stage_channels(s - 1, width_in)
        else:
            in_ch = self.stage_channels(s, width_in)
        out_ch = self.stage_channels(s, width_out)
        mid = self.mid_channels(in_ch, float(expand))
        return LayerSpec(
            kind="block",
            in_res=self.block_in_res(b, resolution),
            in_ch=in_ch,
            out_ch=out_ch,
            mid_ch=mid,
            kernel=int(kernel),
            stride=st.stride if first else 1,
            se=st.se,
            act=st.act,
            se_ch=self.se_channels(mid) if st.se else 0,
            residual=not first,
        )

    def head_spec(self, resolution: int, width_last: float) -> LayerSpec:
        return LayerSpec(
            kind="head",
            in_res=self.final_res(resolution),
            in_ch=self.stage_channels(self.n_stages - 1, width_last),
            out_ch=self.n_classes,
            mid_ch=self.config.head_channels,
            kernel=1,
            stride=1,
            se=False,
            act=self.config.head_act,
        )

    def block_widths(self, arch: Arch, b: int) -> tuple[float, float]:
        """(width_in, width_out) of block position ``b`` in ``arch``, as block_spec takes them."""
        s = self.block_stage[b]
        first = b == self.stages[s].first_block
        w_in = arch.widths[s - 1] if first and s > 0 else arch.widths[s]
        return w_in, arch.widths[s]

    def layer_specs(self, arch: Arch) -> list[LayerSpec]:
        """The extracted subnet's layers in order: stem, active blocks, head."""
        self.validate(arch)
        specs = [self.stem_spec(arch.resolution)]
        for b in self.active_blocks(arch):
            w_in, w_out = self.block_widths(arch, b)
            specs.append(
                self.block_spec(b, arch.resolution, w_in, w_out, arch.kernels[b], arch.expands[b])
            )
        specs.append(self.head_spec(arch.resolution, arch.widths[-1]))
        return specs

    def unique_layer_specs(self) -> list[LayerSpec]:
        """Every spec any arch can produce, enumerated per position (sorted, deduplicated)."""
        seen: set[LayerSpec] = set()
        for r in self.resolutions:
            seen.add(self.stem_spec(r))
            for w in self.widths:
                seen.add(self.head_spec(r, w))
            for b in range(self.n_blocks):
                s = self.block_stage[b]
                first = b == self.stages[s].first_block
                w_ins = self.widths if (first and s > 0) else (None,)
                for w_in, w_out, k, e in itertools.product(
                    w_ins, self.widths, self.kernels, self.expands
                ):
                    seen.add(self.block_spec(b, r, w_out if w_in is None else w_in, w_out, k, e))
        order = {"stem": 0, "block": 1, "head": 2}
        return sorted(seen, key=lambda sp: (order[sp.kind], *astuple_key(sp)))

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


def astuple_key(spec: LayerSpec) -> tuple:
    return (spec.in_res, spec.in_ch, spec.out_ch, spec.mid_ch, spec.kernel, spec.stride, spec.se)
