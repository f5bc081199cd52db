"""Static layers: the standard-torch twins of the elastic ops, one per :class:`LayerSpec` kind.

An extracted subnet is ``nn.Sequential(*(build_layer(s) for s in space.layer_specs(arch)))``
with weights copied from the supernet. Only Conv2d, BatchNorm2d, Linear and activations hold
state; forward methods use plain tensor ops (mean, mul, add) so ONNX export is static.
"""

from __future__ import annotations

import torch
from torch import nn

from onceflow.errors import ConfigError
from onceflow.supernet.dwconv import DepthwiseConv2d
from onceflow.supernet.specs import LayerSpec

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def make_act(name: str) -> nn.Module:
    """Activation module by its params name ("relu" | "hswish")."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BN -> optional activation; 'same' padding k//2."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = None,
    ) -> None:
        depthwise = groups > 1 and groups == in_ch == out_ch
        conv = (
            DepthwiseConv2d(in_ch, kernel, stride)  # an nn.Conv2d that trains faster on CPU
            if depthwise
            else nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        )
        layers: list[nn.Module] = [conv, nn.BatchNorm2d(out_ch)]
        if act is not None:
            layers.append(make_act(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(W2 relu(W1 mean_hw(x)))."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1, bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, [SE], 1x1 project, [+ input]."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.residual = spec.residual
        self.expand = ConvBNAct(spec.in_ch, spec.mid_ch, 1, act=spec.act)
        self.depthwise = ConvBNAct(
            spec.mid_ch, spec.mid_ch, spec.kernel, spec.stride, groups=spec.mid_ch, act=spec.act
        )
        self.se = SqueezeExcite(spec.mid_ch, spec.se_ch) if spec.se else nn.Identity()
        self.project = ConvBNAct(spec.mid_ch, spec.out_ch, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


class Head(nn.Module):
    """1x1 conv -> BN -> act -> global average pool -> linear classifier; returns logits."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.conv = ConvBNAct(spec.in_ch, spec.mid_ch, 1, act=spec.act)
        self.classifier = nn.Linear(spec.mid_ch, spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x).mean((2, 3)))


def build_layer(spec: LayerSpec) -> nn.Module:
    """A fresh static layer for ``spec`` (random weights), input (N, in_ch, in_res, in_res)."""
    if spec.kind == "stem":
        return ConvBNAct(spec.in_ch, spec.out_ch, spec.kernel, spec.stride, act=spec.act)
    if spec.kind == "block":
        return MBConv(spec)
    if spec.kind == "head":
        return Head(spec)
    raise ConfigError(f"LayerSpec.kind must be stem, block or head, got {spec.kind!r}")
