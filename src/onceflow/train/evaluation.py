"""Top-1 accuracy of a model (a Supernet with an active arch, or an extracted subnet)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from onceflow.data.prepared import Meta
from onceflow.train.data import to_input


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images_u8: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    meta: Meta,
    resolution: int,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` in eval mode on uint8 NHWC images."""
    n = len(labels)
    if n == 0:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    correct = 0
    try:
        for i in range(0, n, batch_size):
            x = to_input(images_u8[i : i + batch_size], meta, resolution, device)
            pred = model(x).argmax(1).cpu()
            correct += int((pred == y[i : i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / n
