"""Depthwise convolution with a fast weight gradient on CPU.

oneDNN (torch 2.13) computes the weight gradient of a depthwise convolution with a kernel larger
than 3x3 10-20x slower than the input gradient of the same layer: 256 channels at 4x4, kernel 7,
batch 128 on one core take 13.6 ms against 0.6 ms. In supernet training those gradients were 36%
of a sandwich step. :func:`depthwise_conv2d` keeps torch's forward pass and input gradient and
computes the weight gradient with a compiled loop over channels-last data that accumulates every
kernel tap in a small ``k x k x C`` buffer (0.7 ms for the layer above).

It applies only where it is faster and exact in float32 (CPU, float32, kernel >= 5, autograd
recording a weight gradient); everything else, CUDA included, is plain ``F.conv2d``. The elastic
depthwise layer and the static one (:class:`DepthwiseConv2d`, extracted subnets trained alone)
both use it.
``fast_depthwise(False)`` switches it off (benchmarks and tests compare the two).

numba is imported on the kernel's first use (only training records weight gradients): the
other stages never import it, and where numba or llvmlite is missing or broken the weight
gradient falls back to torch's own convolution (logged once; the same values, slower).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

MIN_KERNEL = 5  # oneDNN is as fast as the loop below for 3x3 kernels
_enabled = True
# The compiled weight-gradient kernel once built; False when numba cannot be used here.
_kernel: Callable[..., np.ndarray] | bool | None = None


@contextmanager
def fast_depthwise(enabled: bool) -> Iterator[None]:
    """Use (or not) the CPU weight-gradient kernel inside the block."""
    global _enabled
    before, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = before


def _weight_grad_nhwc(
    x: np.ndarray, grad_out: np.ndarray, k: int, stride: int, pad: int
) -> np.ndarray:  # pragma: no cover - compiled; tested through depthwise_conv2d
    """``dW[i, j, c] = sum_{n, oh, ow} x[n, oh*s - p + i, ow*s - p + j, c] * dY[n, oh, ow, c]``
    for NHWC ``x`` and ``grad_out``; the innermost loop runs over contiguous channels."""
    n_img, h, w, ch = x.shape
    h_out, w_out = grad_out.shape[1], grad_out.shape[2]
    acc = np.zeros((k, k, ch), np.float32)
    for n in range(n_img):
        for oh in range(h_out):
            for i in range(k):
                ih = oh * stride - pad + i
                if ih < 0 or ih >= h:
                    continue
                for ow in range(w_out):
                    g = grad_out[n, oh, ow]
                    for j in range(k):
                        iw = ow * stride - pad + j
                        if iw < 0 or iw >= w:
                            continue
                        xv = x[n, ih, iw]
                        a = acc[i, j]
                        for c in range(ch):
                            a[c] += xv[c] * g[c]
    return acc


def _compiled_kernel() -> Callable[..., np.ndarray] | None:
    """:func:`_weight_grad_nhwc` compiled by numba (imported here, on first use), or None when
    numba is missing or broken (the caller then uses torch's own weight gradient)."""
    global _kernel
    if _kernel is None:
        try:
            import numba

            _kernel = numba.njit(cache=False, nogil=True, fastmath={"contract"})(_weight_grad_nhwc)
        except (ImportError, OSError, RuntimeError, AttributeError) as err:
            log.warning(
                "numba is unavailable (%s: %s): depthwise weight gradients use torch's own "
                "convolution (same values, slower on CPU)",
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
            )
            _kernel = False
    return _kernel or None  # type: ignore[return-value]


def _nhwc(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NHWC numpy view of an NCHW tensor (a copy only if it is not channels-last)."""
    return t.detach().permute(0, 2, 3, 1).contiguous().numpy()


def depthwise_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, kernel: int, stride: int, padding: int
) -> torch.Tensor:
    """The gradient of a depthwise ``F.conv2d`` (weight ``(C, 1, k, k)``, no dilation) with
    respect to its weight, for float32 CPU tensors."""
    compiled = _compiled_kernel()
    assert compiled is not None, "depthwise_weight_grad needs numba"
    acc = compiled(_nhwc(x), _nhwc(grad_out), kernel, stride, padding)
    return torch.from_numpy(acc).permute(2, 0, 1).unsqueeze(1).contiguous()


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, stride, padding):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, None, stride, padding, 1, weight.size(0))

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0],
                weight.size(0), [True, False, False],
            )[0]  # fmt: skip
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, weight.size(-1), s, p)
        return grad_x, grad_w, None, None


def depthwise_conv2d(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding, 1, C)`` for a ``(C, 1, k, k)`` weight;
    its weight gradient comes from the CPU kernel above where that is faster."""
    if (
        _enabled
        and weight.size(-1) >= MIN_KERNEL
        and weight.requires_grad
        and torch.is_grad_enabled()
        and type(x) is torch.Tensor  # not a fake/functional tensor of export tracing
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and _compiled_kernel() is not None
    ):
        return _DepthwiseConv.apply(x, weight, stride, padding)
    return F.conv2d(x, weight, None, stride, padding, 1, weight.size(0))


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` ('same' padding, no bias) that trains with
    :func:`depthwise_conv2d`; in eval mode (export, inference) it is exactly ``nn.Conv2d``."""

    def __init__(self, channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return depthwise_conv2d(x, self.weight, self.stride[0], self.padding[0])  # type: ignore[index]
        return super().forward(x)
