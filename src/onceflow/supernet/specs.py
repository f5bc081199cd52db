"""Layer specs: the static layers an arch extracts to, each a hashable :class:`LayerSpec`.

A spec fixes everything that determines one layer of an extracted subnet, so it is what
latency lookup tables are keyed on (``onceflow.latency``), what :func:`~onceflow.supernet.layers
.build_layer` builds and what the per-block cost tables (:mod:`onceflow.supernet.tables`) unroll.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from onceflow.supernet.geometry import SpaceGeometry, conv_out

if TYPE_CHECKING:
    from onceflow.supernet.arch import Arch


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


_KIND_ORDER = {"stem": 0, "block": 1, "head": 2}


def _sort_key(spec: LayerSpec) -> tuple:
    """Stem, blocks, head; then by shape: a deterministic order for tables built from specs."""
    s = spec
    return (_KIND_ORDER[s.kind], s.in_res, s.in_ch, s.out_ch, s.mid_ch, s.kernel, s.stride, s.se)


class SpaceLayerSpecs(SpaceGeometry):
    """The layer specs of a search space's subnets. :class:`~onceflow.supernet.space.SearchSpace`
    inherits them and provides the fields annotated here plus ``validate`` and
    ``active_blocks``."""

    in_channels: int
    n_classes: int
    n_blocks: int
    resolutions: tuple[int, ...]
    kernels: tuple[int, ...]
    expands: tuple[float, ...]
    widths: tuple[float, ...]

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
            in_ch=self.stage_channels(len(self.stages) - 1, width_last),
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
        return sorted(seen, key=_sort_key)
