"""Training's data pipeline: augmentation and batch order (inputs: :mod:`onceflow.inputs`).

All ops are batched torch ops on uint8 NHWC tensors (the prepared format), so a whole split
fits in memory and a training batch costs a gather plus a few elementwise kernels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F


def augment(
    images_u8: torch.Tensor, generator: torch.Generator, hflip: bool, crop_padding: int
) -> torch.Tensor:
    """Random horizontal flip and pad-and-random-crop (zero padding) on uint8 NHWC."""
    n, h, w, _ = images_u8.shape
    x = images_u8
    dev = x.device
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.to(dev).view(n, 1, 1, 1), x.flip(2), x)
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x.permute(0, 3, 1, 2), (p, p, p, p)).permute(0, 2, 3, 1)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev)
        rows = (torch.arange(h, device=dev).view(1, h) + dy.view(n, 1)).view(n, h, 1)
        cols = (torch.arange(w, device=dev).view(1, w) + dx.view(n, 1)).view(n, 1, w)
        x = padded[torch.arange(n, device=dev).view(n, 1, 1), rows, cols]
    return x


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """One epoch over ``n`` items: a fresh permutation from ``generator`` cut into batches of
    ``batch_size`` (the last one may be short), each batch's indices sorted (sequential reads)."""
    perm = torch.randperm(n, generator=generator).numpy()
    for start in range(0, n, batch_size):
        yield np.sort(perm[start : start + batch_size])
