"""The CPU depthwise weight-gradient kernel against torch's own gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from onceflow.supernet.dwconv import depthwise_conv2d, fast_depthwise


def _grads(x, w, stride, padding, fast: bool, memory=torch.channels_last):
    x = x.detach().contiguous(memory_format=memory).requires_grad_()
    w = w.detach().clone().requires_grad_()
    with fast_depthwise(fast):
        y = depthwise_conv2d(x, w, stride, padding)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, w.grad, y.grad_fn


@pytest.mark.parametrize(
    ("channels", "side", "kernel", "stride", "memory"),
    [
        (48, 14, 7, 1, torch.channels_last),
        (64, 7, 5, 1, torch.channels_last),
        (96, 7, 7, 2, torch.channels_last),
        (24, 9, 5, 2, torch.channels_last),
        (20, 8, 7, 1, torch.contiguous_format),  # not channels-last: copied, same result
        (8, 3, 7, 1, torch.channels_last),  # kernel larger than the image
    ],
)
def test_fast_gradients_match_torch(channels, side, kernel, stride, memory):
    g = torch.Generator().manual_seed(channels + kernel)
    x = torch.randn(6, channels, side, side, generator=g)
    w = torch.randn(channels, 1, kernel, kernel, generator=g)
    y0, gx0, gw0, fn0 = _grads(x, w, stride, kernel // 2, fast=False, memory=memory)
    y1, gx1, gw1, fn1 = _grads(x, w, stride, kernel // 2, fast=True, memory=memory)
    assert "DepthwiseConv" in type(fn1).__name__ and "DepthwiseConv" not in type(fn0).__name__
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(gx1, gx0)
    torch.testing.assert_close(gw1, gw0, rtol=1e-4, atol=1e-4)


def test_matches_float64_reference():
    """The float32 kernel agrees with a float64 computation of the same gradient."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 1, 7, 7, generator=g)
    x64, w64 = x.double(), w.double().requires_grad_()
    F.conv2d(x64, w64, None, 1, 3, 1, 16).sum().backward()
    w32 = w.clone().requires_grad_()
    y = depthwise_conv2d(x, w32, 1, 3)
    assert "DepthwiseConv" in type(y.grad_fn).__name__
    y.sum().backward()
    torch.testing.assert_close(w32.grad.double(), w64.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", ["kernel3", "no_grad", "weight_frozen", "float64"])
def test_falls_back_to_torch_where_not_faster_or_not_float32(case):
    x = torch.randn(2, 8, 6, 6)
    w = torch.randn(8, 1, 3 if case == "kernel3" else 5, 3 if case == "kernel3" else 5)
    w.requires_grad_(case != "weight_frozen")
    if case == "float64":
        x, w = x.double(), w.detach().double().requires_grad_()
    with torch.set_grad_enabled(case != "no_grad"):
        y = depthwise_conv2d(x, w, 1, w.size(-1) // 2)
    assert y.grad_fn is None or "DepthwiseConv" not in type(y.grad_fn).__name__
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, w.size(-1) // 2, 1, 8))


def test_static_depthwise_layer_trains_with_the_kernel_and_exports_as_conv2d():
    from torch import nn

    from onceflow.supernet.dwconv import DepthwiseConv2d

    layer = DepthwiseConv2d(16, 7, stride=2)
    assert isinstance(layer, nn.Conv2d) and layer.padding == (3, 3) and layer.bias is None
    x = torch.randn(2, 16, 9, 9).contiguous(memory_format=torch.channels_last)
    y = layer.train()(x)
    assert "DepthwiseConv" in type(y.grad_fn).__name__
    torch.testing.assert_close(y, F.conv2d(x, layer.weight, None, 2, 3, 1, 16))
    assert "DepthwiseConv" not in type(layer.eval()(x).grad_fn).__name__
