"""Small spaces for fast tests (shared by tests/supernet and tests/train)."""

from __future__ import annotations

import torch

from onceflow.config import StageConfig, SupernetConfig
from onceflow.supernet import SearchSpace, Supernet

TINY_SPACE = {
    "resolutions": [20, 28],
    "kernels": [3, 5],
    "expands": [2.0, 3.0],
    "depths": [1, 2],
    "widths": [0.5, 1.0],
    "stem_channels": 8,
    "stem_stride": 2,
    "stages": [
        {"channels": 8, "stride": 2, "se": False, "act": "relu"},
        {"channels": 16, "stride": 2, "se": True, "act": "hswish"},
    ],
    "head_channels": 32,
    "dropout": 0.0,
}


def tiny_space(**over) -> SearchSpace:
    cfg = dict(TINY_SPACE, **over)
    cfg["stages"] = [StageConfig(**s) for s in cfg["stages"]]
    return SearchSpace(SupernetConfig(**cfg), in_channels=1, n_classes=10, image_size=28)


def perturb(net: Supernet, seed: int = 0) -> Supernet:
    """Non-trivial BN statistics/affines and kernel transforms, so exactness tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
        for name, p in net.named_parameters():
            if ".transforms." in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net
