"""Calibration data for int8 builds, shared by the TensorRT and ONNX Runtime int8 paths.

Both quantize from the same inputs: a fixed random subset of prepared *train* images,
normalized like training (``calibration_images``), and batches of them shaped for one model
(``calibration_batches``): resized to the model's input when it takes images, and seeded
standard-normal activations of the model's exact shape for isolated inner layers (LUT entries),
whose inputs are not images.

Why shaped synthetic activations suffice for LUT entries: calibration only picks each tensor's
scale and zero point; the quantized graph (which ops, which int8 kernels) and therefore its
latency does not depend on those values. ``tests/latency/test_quantize.py`` checks that two very
different calibration sets give the same quantized op graph. End-to-end subnets (the
estimator's calibration and validation) and shipped packages always calibrate on real images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from onceflow.accuracy import calibration_indices
from onceflow.config import LatencyTarget
from onceflow.data.prepared import PreparedData, load_prepared, normalize
from onceflow.inputs import resize


def calibration_images(data: PreparedData, n: int, seed: int = 0) -> np.ndarray:
    """``n`` train images, float32 NCHW normalized like training, at the prepared resolution:
    a fixed random subset, drawn as BatchNorm recalibration draws its images."""
    idx = calibration_indices(len(data.train), n, seed)
    return normalize(np.asarray(data.train.images[idx]), data.meta)


def target_calibration_images(
    target: LatencyTarget, data: PreparedData | str | os.PathLike[str] | None, seed: int = 0
) -> np.ndarray | None:
    """The images ``target``'s backend calibrates int8 builds on: its
    ``options.int8_calibration_images`` train images of ``data`` (:func:`calibration_images`;
    a prepared-data directory is opened only then). None for other precisions or without data."""
    if target.precision != "int8" or data is None:
        return None
    if not isinstance(data, PreparedData):
        data = load_prepared(data)
    return calibration_images(data, target.options.int8_calibration_images, seed)


def calibration_batches(
    images: np.ndarray | None, input_shape: Sequence[int], n_images: int, seed: int = 0
) -> list[np.ndarray]:
    """float32 batches of exactly ``input_shape`` (N, C, H, W) covering ``n_images`` inputs.

    Real images (resized like training) when ``images`` has C channels; otherwise seeded
    standard-normal activations of that shape. At least one batch; a trailing partial batch
    is dropped unless it would be the only one (then images repeat to fill it).
    """
    b, c, h, w = (int(d) for d in input_shape)
    n_images = max(int(n_images), b)
    if images is not None and images.ndim == 4 and images.shape[1] == c and len(images):
        x = torch.from_numpy(np.ascontiguousarray(images[:n_images], dtype=np.float32))
        x = resize(x, h) if h == w else torch.nn.functional.interpolate(x, size=(h, w))
        data = x.numpy()
        if len(data) < b:
            data = np.resize(data, (b, *data.shape[1:]))
    else:
        rng = np.random.default_rng([seed, c, h, w])
        data = rng.standard_normal((n_images, c, h, w)).astype(np.float32)
    n = max(1, len(data) // b)
    return [np.ascontiguousarray(data[i * b : (i + 1) * b]) for i in range(n)]
