"""prepare: read a source, split it, compute normalization, run the validation gate.

Pure with respect to outputs: :func:`prepare_dataset` returns values; the stage writes them
(the gate's report first, then :meth:`Prepared.check`, the splits and the metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from onceflow.config import DataConfig
from onceflow.data.prepared import Meta, Split, content_hash, save_split
from onceflow.data.sources import read_source
from onceflow.data.split import stratified_split, stratified_subset
from onceflow.data.validate import GateResult, image_table, run_gate
from onceflow.errors import DataError, ValidationFailed
from onceflow.metrics import data_headline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    splits: dict[str, Split]
    meta: Meta
    gate: GateResult

    def metrics(self) -> dict:
        return {
            "n_train": len(self.splits["train"]),
            "n_val": len(self.splits["val"]),
            "n_test": len(self.splits["test"]),
            "n_classes": self.meta.n_classes,
            "n_train_val_duplicates": self.gate.n_train_val_duplicates,
            "validation_success": self.gate.success,
        }

    @property
    def details(self) -> dict:
        """metrics/data.details.json."""
        return self.metrics()

    @property
    def headline(self) -> dict:
        """metrics/data.json: the gate's verdict and the image count."""
        return data_headline(self.metrics())

    @property
    def texts(self) -> dict[str, str]:
        """The gate's report (JSON) and summary (Markdown), by stage argument: written first,
        whether or not the gate passed (they are how a user sees why)."""
        report = json.dumps(self.gate.to_json(), indent=2) + "\n"
        return {"report": report, "summary": self.gate.summary_markdown()}

    def check(self, args: argparse.Namespace) -> None:
        """Raise ValidationFailed naming every failed expectation, the report file that
        explains them and the ``--out`` directory left unwritten; nothing when the gate
        passed."""
        if not self.gate.success:
            failed = "; ".join(f"{e.name}: {e.observed}" for e in self.gate.failures)
            raise ValidationFailed(
                f"data validation failed ({args.report}): {failed}. "
                f"Nothing was written to {args.out}."
            )

    @property
    def summary(self) -> str:
        return f"prepared {self.details}"

    def save(self, directory: Path) -> None:
        for name, split in self.splits.items():
            save_split(directory, name, split)
        (directory / "meta.json").write_text(json.dumps(self.meta.to_json(), indent=2) + "\n")


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NHWC images on the [0, 1] scale (float64 sums)."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-6)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def check_not_empty(splits: dict[str, Split], cfg: DataConfig, n_classes: int) -> None:
    """A quick-run subset too small for the split leaves a split empty: say which key to raise."""
    empty = [name for name, split in splits.items() if len(split) == 0]
    if not empty:
        return
    if "test" in empty:
        key, value = "data.max_test", cfg.max_test
    else:
        key, value = "data.max_train", cfg.max_train
    need = (
        n_classes
        if key == "data.max_test"
        else max(2 * n_classes, int(n_classes / cfg.val_fraction))
    )
    raise DataError(
        f"{key}: {value} leaves the {' and '.join(empty)} split(s) empty "
        f"({n_classes} classes, data.val_fraction {cfg.val_fraction}); set {key} to at least "
        f"{need} (or null for all images)"
    )


def prepare_dataset(cfg: DataConfig, seed: int) -> Prepared:
    raw = read_source(cfg.source, cfg.path, cfg.image_size, cfg.channels, cfg.max_image_pixels)
    rng = np.random.default_rng(seed)
    pool_x, pool_y = raw.train_images, raw.train_labels
    if cfg.max_train is not None:
        keep = stratified_subset(pool_y, cfg.max_train, rng)
        pool_x, pool_y = pool_x[keep], pool_y[keep]
    test_x, test_y = raw.test_images, raw.test_labels
    if cfg.max_test is not None:
        keep = stratified_subset(test_y, cfg.max_test, rng)
        test_x, test_y = test_x[keep], test_y[keep]
    tr_idx, va_idx = stratified_split(pool_y, cfg.val_fraction, rng)
    splits = {
        "train": Split(pool_x[tr_idx], pool_y[tr_idx]),
        "val": Split(pool_x[va_idx], pool_y[va_idx]),
        "test": Split(test_x, test_y),
    }
    check_not_empty(splits, cfg, len(raw.classes))
    h, w, c = raw.train_images.shape[1:]
    mean, std = channel_stats(splits["train"].images)
    meta = Meta(
        classes=raw.classes, height=h, width=w, channels=c, mean=mean, std=std,
        source=cfg.source, counts={k: len(v) for k, v in splits.items()},
    )  # fmt: skip
    meta = replace(meta, content_sha256=content_hash(splits, meta))
    table = image_table({k: (v.images, v.labels) for k, v in splits.items()}, meta.n_classes)
    gate = run_gate(table, cfg, n_classes=meta.n_classes, shape=(h, w, c))
    return Prepared(splits=splits, meta=meta, gate=gate)
