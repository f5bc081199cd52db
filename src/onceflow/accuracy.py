"""Accuracy of a model, and of a subnet after BatchNorm recalibration.

A subnet cut from the supernet carries BN statistics collected over many subnets; before it is
scored or shipped its statistics are re-estimated on a fixed train subset
(:func:`calibration_indices`), by one function (:func:`recalibrated`) shared by training's
validation, packaging and the weight-sharing benchmark. (The predictor's meter recalibrates the
supernet in place on its own two fixed subsets, calibration and retest: a different protocol,
so it keeps its own code in ``predictor/dataset.py``.) Latency calibration draws its images with
:func:`calibration_indices` too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from onceflow.data.prepared import Meta, PreparedData
from onceflow.inputs import to_input
from onceflow.supernet import Arch, Supernet, recalibrate_bn


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images_u8: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    meta: Meta,
    resolution: int,
    batch_size: int,
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` in eval mode on uint8 NHWC images."""
    n = len(labels)
    if n == 0:
        return float("nan")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)  # a copy: labels may be read-only
    correct = 0
    try:
        for i in range(0, n, batch_size):
            x = to_input(images_u8[i : i + batch_size], meta, resolution, device)
            pred = model(x).argmax(1).cpu()
            correct += int((pred == y[i : i + batch_size]).sum())
    finally:
        model.train(was_training)
    return correct / n


def calibration_indices(n_train: int, n: int, seed: int) -> np.ndarray:
    """A fixed random subset (sorted) of train indices used for BN recalibration."""
    n = min(n, n_train)
    return np.sort(np.random.default_rng([seed, 0xBA7C]).choice(n_train, size=n, replace=False))


def recalibrated(
    sub: nn.Module, resolution: int, data: PreparedData, *, n_calib: int, batch_size: int, seed: int
) -> nn.Module:
    """``sub`` (an extracted subnet, changed in place) with its BN statistics re-estimated on
    ``n_calib`` train images at ``resolution``; returned in eval mode."""
    device = next(sub.parameters()).device
    idx = calibration_indices(len(data.train), n_calib, seed)
    calib = to_input(data.train.images[idx], data.meta, resolution, device)
    recalibrate_bn(sub, calib, len(idx), batch_size=batch_size)
    return sub.eval()


def recalibrated_accuracy(
    supernet: Supernet,
    arch: Arch,
    data: PreparedData,
    *,
    n_calib: int,
    batch_size: int,
    seed: int,
    split: str = "val",
    max_images: int | None = None,
) -> float:
    """Accuracy of ``arch`` on ``split`` (its first ``max_images``, default all) after BN
    recalibration (:func:`recalibrated`). The subnet is extracted first, so the supernet's own
    BN statistics are left untouched."""
    sub = recalibrated(
        supernet.extract(arch), arch.resolution, data, n_calib=n_calib, batch_size=batch_size,
        seed=seed,
    )  # fmt: skip
    part = data.split(split)
    n = len(part) if max_images is None else min(max_images, len(part))
    return evaluate(sub, part.images[:n], part.labels[:n], data.meta, arch.resolution, batch_size)
