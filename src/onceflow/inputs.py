"""Network inputs from prepared uint8 images: normalize with the train statistics, resize.

The one preprocessing used for training, evaluation, BN recalibration, latency calibration,
export and packaging; it lives below all of them (training, latency, packaging and the predictor
import it, it imports only the prepared-data format).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onceflow.data.prepared import Meta


def _as_tensor(images_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(images_u8, torch.Tensor):
        return images_u8
    arr = np.ascontiguousarray(images_u8)
    if not arr.flags.writeable:  # memory-mapped prepared data: torch wants writable memory
        arr = arr.copy()
    return torch.from_numpy(arr)


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize float NCHW to ``resolution`` (bilinear, antialiased when shrinking)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    shrink = resolution < x.shape[-1]
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink
    )


def to_input(
    images_u8: np.ndarray | torch.Tensor,
    meta: Meta,
    resolution: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, r, r): /255, standardized with the train mean/std,
    resized to ``resolution``. The one preprocessing used for training, evaluation and export."""
    x = _as_tensor(images_u8).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(meta.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    return resize(x, resolution).contiguous()
