"""Channel and resolution arithmetic: how wide and how large every layer of a subnet is.

Channels are rounded to multiples of params ``supernet.channel_divisor`` (:func:`make_divisible`);
side lengths follow 'same'-padded strided convolutions (:func:`conv_out`). The stage geometry
(:class:`StageGeometry`) is params ``supernet.stages`` resolved against the shared defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from onceflow.config import SupernetConfig


def make_divisible(value: float, divisor: int) -> int:
    """Round ``value`` to a multiple of ``divisor`` (>= divisor), never dropping below 90%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded (k//2) convolution with an odd kernel."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class StageGeometry:
    """One stage of MBConv blocks, resolved from params ``supernet.stages``."""

    channels: int  # output channels at width 1.0
    stride: int  # of the stage's first block
    se: bool
    act: str
    depths: tuple[int, ...]  # allowed depths, ascending
    first_block: int  # global index of the stage's first block position

    @property
    def max_depth(self) -> int:
        return self.depths[-1]


def resolve_stages(config: SupernetConfig) -> tuple[StageGeometry, ...]:
    """The stages in order, each numbering its block positions after the previous stage's."""
    stages = []
    first = 0
    for st in config.stages:
        depths = tuple(st.depths if st.depths is not None else config.depths)
        stages.append(StageGeometry(st.channels, st.stride, st.se, st.act, depths, first))
        first += depths[-1]
    return tuple(stages)


class SpaceGeometry:
    """Layer shapes of a search space; :class:`~onceflow.supernet.space.SearchSpace` inherits
    them and provides the fields annotated here."""

    config: SupernetConfig
    stages: tuple[StageGeometry, ...]
    block_stage: tuple[int, ...]  # block position -> stage index

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
