"""Elastic ops: layers that hold the largest weights and run any smaller slice of them.

Each elastic layer has a static twin in :mod:`onceflow.supernet.layers` and a ``to_static``
that copies the active slice into it, so training weights and exported weights cannot diverge.

- channels: the first ``c`` channels are active (kept meaningful by :func:`reorder` between
  progressive-shrinking phases, which sorts channels by importance);
- kernel size: the centre ``k x k`` of the largest kernel, passed through a learned per-layer
  ``k^2 x k^2`` transformation (Once-for-All), chained from the largest size downwards;
- batch norm: statistics and affine parameters sliced to the active channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onceflow.supernet.dwconv import depthwise_conv2d
from onceflow.supernet.layers import ConvBNAct, Head, MBConv, make_act
from onceflow.supernet.specs import LayerSpec


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``x.size(1)`` channels; running stats update in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.size(1)
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
        use_batch_stats = self.training or self.running_mean is None
        # Slices of contiguous 1-D buffers are views: batch_norm's in-place stat update lands
        # in the full buffers.
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            factor,
            self.eps,
        )

    def copy_to(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        with torch.no_grad():
            bn.weight.copy_(self.weight[:c])
            bn.bias.copy_(self.bias[:c])
            bn.running_mean.copy_(self.running_mean[:c])
            bn.running_var.copy_(self.running_var[:c])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        bn.eps, bn.momentum = self.eps, self.momentum


class DynamicPointwise(nn.Conv2d):
    """1x1 convolution (no bias) using the first ``out_ch`` filters and ``x.size(1)`` inputs."""

    def __init__(self, max_in: int, max_out: int) -> None:
        super().__init__(max_in, max_out, 1, bias=False)

    def active_weight(self, in_ch: int, out_ch: int) -> torch.Tensor:
        return self.weight[:out_ch, :in_ch]

    def forward(self, x: torch.Tensor, out_ch: int | None = None) -> torch.Tensor:  # type: ignore[override]
        out_ch = self.out_channels if out_ch is None else out_ch
        return F.conv2d(x, self.active_weight(x.size(1), out_ch))


class DynamicDepthwise(nn.Module):
    """Depthwise conv with elastic channels and kernel size (centre crop + learned transform)."""

    def __init__(self, max_ch: int, kernels: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        self.stride = stride
        kmax = self.kernels[-1]
        self.conv = nn.Conv2d(max_ch, max_ch, kmax, stride, kmax // 2, groups=max_ch, bias=False)
        # One k^2 x k^2 matrix per smaller kernel, shared by all channels, identity at start.
        self.transforms = nn.ParameterDict(
            {f"{k}": nn.Parameter(torch.eye(k * k)) for k in self.kernels[:-1]}
        )

    def active_weight(self, ch: int, kernel: int) -> torch.Tensor:
        w = self.conv.weight[:ch]  # (ch, 1, kmax, kmax)
        for k in reversed(self.kernels[:-1]):
            if k < kernel:
                break
            cur = w.size(-1)
            start = (cur - k) // 2
            crop = w[:, :, start : start + k, start : start + k].reshape(ch, k * k)
            w = F.linear(crop, self.transforms[f"{k}"]).reshape(ch, 1, k, k)
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        ch = x.size(1)
        return depthwise_conv2d(x, self.active_weight(ch, kernel), self.stride, kernel // 2)


class DynamicSE(nn.Module):
    """Squeeze-and-excitation over the active ``x.size(1)`` channels with ``se_ch`` squeeze."""

    def __init__(self, max_ch: int, max_se: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(max_ch, max_se, 1, bias=True)
        self.expand = nn.Conv2d(max_se, max_ch, 1, bias=True)

    def forward(self, x: torch.Tensor, se_ch: int) -> torch.Tensor:
        c = x.size(1)
        s = x.mean((2, 3), keepdim=True)
        s = F.relu(F.conv2d(s, self.reduce.weight[:se_ch, :c], self.reduce.bias[:se_ch]))
        s = F.conv2d(s, self.expand.weight[:c, :se_ch], self.expand.bias[:c])
        return x * F.hardsigmoid(s)


def _copy(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


class DynamicMBConv(nn.Module):
    """The largest MBConv of one block position; runs any :class:`LayerSpec` of that position."""

    def __init__(self, max_spec: LayerSpec, kernels: tuple[int, ...]) -> None:
        super().__init__()
        s = max_spec
        self.residual = s.residual
        self.has_se = s.se
        self.expand_conv = DynamicPointwise(s.in_ch, s.mid_ch)
        self.expand_bn = DynamicBatchNorm2d(s.mid_ch)
        self.depthwise = DynamicDepthwise(s.mid_ch, kernels, s.stride)
        self.dw_bn = DynamicBatchNorm2d(s.mid_ch)
        self.act = make_act(s.act)
        self.se = DynamicSE(s.mid_ch, s.se_ch) if s.se else None
        self.project_conv = DynamicPointwise(s.mid_ch, s.out_ch)
        self.project_bn = DynamicBatchNorm2d(s.out_ch)

    def forward(self, x: torch.Tensor, spec: LayerSpec) -> torch.Tensor:
        y = self.act(self.expand_bn(self.expand_conv(x, spec.mid_ch)))
        y = self.act(self.dw_bn(self.depthwise(y, spec.kernel)))
        if self.se is not None:
            y = self.se(y, spec.se_ch)
        y = self.project_bn(self.project_conv(y, spec.out_ch))
        return x + y if self.residual else y

    def to_static(self, spec: LayerSpec) -> MBConv:
        m = MBConv(spec)
        _copy(m.expand[0].weight, self.expand_conv.active_weight(spec.in_ch, spec.mid_ch))
        self.expand_bn.copy_to(m.expand[1])
        _copy(m.depthwise[0].weight, self.depthwise.active_weight(spec.mid_ch, spec.kernel))
        self.dw_bn.copy_to(m.depthwise[1])
        if self.se is not None:
            c, q = spec.mid_ch, spec.se_ch
            _copy(m.se.reduce.weight, self.se.reduce.weight[:q, :c])
            _copy(m.se.reduce.bias, self.se.reduce.bias[:q])
            _copy(m.se.expand.weight, self.se.expand.weight[:c, :q])
            _copy(m.se.expand.bias, self.se.expand.bias[:c])
        _copy(m.project[0].weight, self.project_conv.active_weight(spec.mid_ch, spec.out_ch))
        self.project_bn.copy_to(m.project[1])
        return m

    @torch.no_grad()
    def reorder_mid(self) -> None:
        """Sort expanded channels (and SE squeeze channels) by importance, most important first.

        Importance of a mid channel = L1 norm of the project weights reading it.
        """
        order = _importance_order(self.project_conv.weight, dim=1)
        _permute(self.project_conv.weight, order, 1)
        _permute_bn(self.dw_bn, order)
        _permute(self.depthwise.conv.weight, order, 0)
        _permute_bn(self.expand_bn, order)
        _permute(self.expand_conv.weight, order, 0)
        if self.se is not None:
            _permute(self.se.reduce.weight, order, 1)
            _permute(self.se.expand.weight, order, 0)
            _permute(self.se.expand.bias, order, 0)
            sq = _importance_order(self.se.expand.weight, dim=1)
            _permute(self.se.expand.weight, sq, 1)
            _permute(self.se.reduce.weight, sq, 0)
            _permute(self.se.reduce.bias, sq, 0)


class DynamicHead(nn.Module):
    """Head with elastic input channels (the last stage's width); the rest is fixed."""

    def __init__(self, max_spec: LayerSpec, dropout: float) -> None:
        super().__init__()
        self.conv = DynamicPointwise(max_spec.in_ch, max_spec.mid_ch)
        self.bn = nn.BatchNorm2d(max_spec.mid_ch)
        self.act = make_act(max_spec.act)
        self.dropout = dropout
        self.classifier = nn.Linear(max_spec.mid_ch, max_spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn(self.conv(x))).mean((2, 3))
        y = F.dropout(y, self.dropout, self.training)
        return self.classifier(y)

    def to_static(self, spec: LayerSpec) -> Head:
        m = Head(spec)
        _copy(m.conv[0].weight, self.conv.active_weight(spec.in_ch, spec.mid_ch))
        m.conv[1].load_state_dict(self.bn.state_dict())
        m.classifier.load_state_dict(self.classifier.state_dict())
        return m


def copy_stem(src: ConvBNAct, spec: LayerSpec) -> ConvBNAct:
    """Static copy of the (non-elastic) stem."""
    m = ConvBNAct(spec.in_ch, spec.out_ch, spec.kernel, spec.stride, act=spec.act)
    m.load_state_dict(src.state_dict())
    return m


# ---------------------------------------------------------------------------- reordering helpers
def _importance_order(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Indices of ``weight``'s slices along ``dim`` by descending L1 norm (stable)."""
    dims = [d for d in range(weight.dim()) if d != dim]
    imp = weight.detach().abs().sum(dim=dims)
    return torch.sort(imp, descending=True, stable=True).indices


def _permute(t: torch.Tensor, order: torch.Tensor, dim: int) -> None:
    n = order.numel()
    idx = [slice(None)] * t.dim()
    idx[dim] = slice(0, n)
    sl = tuple(idx)
    t[sl] = t[sl].index_select(dim, order.to(t.device)).clone()


def _permute_bn(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        _permute(t, order, 0)
