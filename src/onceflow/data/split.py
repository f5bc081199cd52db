"""Deterministic, seeded, stratified sub-sampling and train/val splitting."""

from __future__ import annotations

import numpy as np


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder apportionment of ``total`` over classes in proportion to ``counts``."""
    exact = counts * (total / counts.sum())
    base = np.floor(exact).astype(np.int64)
    remainder = total - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:remainder]] += 1
    return np.minimum(base, counts)


def stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-proportional subset of size ``min(n, len(labels))``, sorted."""
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quotas = _quotas(counts, n)
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quotas, strict=True)
    ]
    return np.sort(np.concatenate(picked))


def stratified_split(
    labels: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): each class contributes ``round(n_c * val_fraction)`` to val.

    A class with at least two images keeps at least one on each side.
    """
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
