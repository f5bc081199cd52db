"""The data validation gate: a Great Expectations suite over a per-image table.

Each row describes one image (split, label, pixel statistics, content hash, shape); derived
columns carry what GX has no expectation for (per-class counts, train/val-to-test leaks).
Nothing downstream runs unless every expectation passes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from onceflow.config import DataConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpectationResult:
    name: str
    description: str
    success: bool
    observed: str

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "success": self.success,
                "observed": self.observed}  # fmt: skip


@dataclass(frozen=True)
class GateResult:
    success: bool
    n_rows: int
    expectations: tuple[ExpectationResult, ...]
    n_train_val_duplicates: int = 0  # val images whose content hash is also in train

    @property
    def failures(self) -> tuple[ExpectationResult, ...]:
        return tuple(e for e in self.expectations if not e.success)

    def to_json(self) -> dict:
        import great_expectations as gx

        return {"success": self.success, "n_rows": self.n_rows,
                "n_train_val_duplicates": self.n_train_val_duplicates,
                "great_expectations_version": gx.__version__,
                "expectations": [e.to_json() for e in self.expectations]}  # fmt: skip

    def summary_markdown(self) -> str:
        lines = [f"# Data validation: {'PASSED' if self.success else 'FAILED'}", "",
                 f"{self.n_rows} images checked, {len(self.failures)} of "
                 f"{len(self.expectations)} expectations failed; "
                 f"{self.n_train_val_duplicates} val images duplicate train images.", "",
                 "| expectation | result | observed |", "|---|---|---|"]  # fmt: skip
        for e in self.expectations:
            lines.append(f"| {e.description} | {'ok' if e.success else 'FAIL'} | {e.observed} |")
        return "\n".join(lines) + "\n"


def image_hashes(images: np.ndarray) -> list[str]:
    """Content hash per image (128-bit BLAKE2b of its bytes)."""
    return [hashlib.blake2b(im.tobytes(), digest_size=16).hexdigest() for im in images]


def image_table(splits: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int) -> pd.DataFrame:
    """One row per image: split, label, mean/std/min/max pixel, hash, shape, derived counts."""
    frames = []
    for split, (images, labels) in splits.items():
        flat = images.reshape(len(images), -1).astype(np.float32)
        frames.append(pd.DataFrame({
            "split": split,
            "label": labels.astype(np.int64),
            "mean": flat.mean(axis=1) if len(flat) else np.zeros(0),
            "std": flat.std(axis=1) if len(flat) else np.zeros(0),
            "min": flat.min(axis=1) if len(flat) else np.zeros(0),
            "max": flat.max(axis=1) if len(flat) else np.zeros(0),
            "hash": image_hashes(images),
            "shape": "x".join(map(str, images.shape[1:])),
        }))  # fmt: skip
    df = pd.concat(frames, ignore_index=True)
    df["split_label"] = df["split"] + ":" + df["label"].astype(str)
    df["class_count"] = df.groupby(["split", "label"])["label"].transform("size")
    df["split_size"] = df.groupby("split")["label"].transform("size")
    # Ratio of a class's count to the mean per-class count of its split (1.0 = balanced).
    df["class_ratio"] = df["class_count"] / (df["split_size"] / n_classes)
    test_hashes = set(df.loc[df["split"] == "test", "hash"])
    df["leaks_into_test"] = (df["split"] != "test") & df["hash"].isin(test_hashes)
    train_hashes = set(df.loc[df["split"] == "train", "hash"])
    df["duplicates_train"] = (df["split"] == "val") & df["hash"].isin(train_hashes)
    # One value per row so GX can bound it: the split-level count of val-in-train duplicates.
    df["train_val_duplicates"] = int(df["duplicates_train"].sum())
    return df


def class_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (split, label) of the image table: its images, balance ratio, split size,
    images also in test and the split-level val-in-train duplicate count. The per-class and
    per-split expectations run on it, so GX's result names each failing class by its row."""
    return (
        df.groupby(["split", "label"], sort=True)
        .agg(
            split_label=("split_label", "first"),
            class_count=("class_count", "first"),
            class_ratio=("class_ratio", "first"),
            split_size=("split_size", "first"),
            leaks_into_test=("leaks_into_test", "sum"),
            train_val_duplicates=("train_val_duplicates", "first"),
        )
        .reset_index()
    )


# How a failed expectation reads: from its GX result (``result`` fields of the SUMMARY format,
# plus ``unexpected_index_list`` of the per-class table, whose rows are named by split, label
# and image count) and the expectation's kwargs. Each returns what was observed and what to do.
CLASS_KEY = ["split", "label", "class_count"]  # what names a row of the per-class table
Words = Callable[[dict[str, Any], dict[str, Any]], str]


def _values(res: dict[str, Any]) -> list[Any]:
    return sorted({c["value"] for c in res.get("partial_unexpected_counts") or []}, key=str)


def _images(res: dict[str, Any]) -> str:
    return f"{res.get('unexpected_count', 0)} of {_n(res.get('element_count'), 'image')}"


def _rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return list(res.get("unexpected_index_list") or [])


def _n(k: Any, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _per_class(res: dict[str, Any], column: str) -> str:
    items = [f"{r['split']} class {r['label']}: {_n(r[column], 'image')}" for r in _rows(res)]
    return ", ".join(items[:8]) + (f" ... ({len(items)} classes)" if len(items) > 8 else "")


def _per_split(res: dict[str, Any], column: str, total: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in _rows(res):
        out[r["split"]] = out.get(r["split"], 0) + r[column] if total else r[column]
    return out


def _bounds(kw: dict[str, Any]) -> str:
    lo, hi = kw.get("min_value"), kw.get("max_value")
    if lo is not None and hi is not None:
        return f"{lo:g}..{hi:g}"
    return f">= {lo:g}" if lo is not None else f"<= {hi:g}"


def _words(name: str, n_classes: int) -> Words:
    if name == "label_in_class_set":
        return lambda res, kw: (
            f"labels {_values(res)[:5]} in {_images(res)} (column label must be in "
            f"0..{n_classes - 1}, the source's classes); fix or drop those images at the source"
        )
    if name == "every_class_present":
        return lambda res, kw: (
            f"missing {', '.join(res.get('partial_missing_list') or [])[:200]} "
            f"({_n(res.get('missing_count'), 'split:class pair')} with no images); add images of "
            "those classes, or raise data.max_train/max_test or data.val_fraction"
        )
    if name == "min_images_per_class":
        return lambda res, kw: (
            f"{_per_class(res, 'class_count')} (need {_bounds(kw)}); add images or "
            "lower data.min_images_per_class"
        )
    if name == "class_balance":
        return lambda res, kw: (
            f"{_per_class(res, 'class_count')} (class_ratio to the split's mean "
            f"must be {_bounds(kw)}); rebalance the source or raise data.class_balance_tolerance"
        )
    if name == "min_split_size":
        return lambda res, kw: (
            ", ".join(f"{k}: {_n(v, 'image')}" for k, v in _per_split(res, "split_size").items())
            + f" (need {_bounds(kw)}: classes x data.min_images_per_class); add images, "
            "change data.val_fraction or lower data.min_images_per_class"
        )
    if name == "expected_shape":
        return lambda res, kw: (
            f"shapes {_values(res)[:3]} in {_images(res)}, expected {kw['value_set'][0]}; one "
            "source has one shape (imagefolder: set data.image_size and data.channels)"
        )
    if name in ("pixel_min_in_range", "pixel_max_in_range"):
        return lambda res, kw: (
            f"{kw['column']} {_values(res)[:3]} in {_images(res)} (must be {_bounds(kw)}); the "
            "source must hold 8-bit images"
        )
    if name in ("no_nan_mean", "no_nan_std"):
        return lambda res, kw: (
            f"{_images(res)} with NaN {kw['column']}; the source holds unreadable images"
        )
    if name == "no_test_leak":
        return lambda res, kw: (
            f"{sum(_per_split(res, 'leaks_into_test', total=True).values())} images ("
            + ", ".join(f"{k}: {v}" for k, v in _per_split(res, "leaks_into_test", True).items())
            + ") also in test (same content); remove them from train or from test"
        )
    if name == "train_val_duplicates":
        return lambda res, kw: (
            f"{_values(res)[0] if _values(res) else '?'} val images duplicate train images "
            f"(allowed: data.max_train_val_duplicates = {kw['max_value']:g}); remove the "
            "duplicates or raise data.max_train_val_duplicates"
        )
    raise KeyError(name)


IMAGES, CLASSES = "images", "classes"  # the table each expectation runs on


def _checks(
    cfg: DataConfig, n_classes: int, shape: tuple[int, int, int]
) -> list[tuple[str, str, str, Any]]:
    """The gate's expectations as (name, description, table, GX expectation), from the ``data``
    section's rules for ``n_classes`` classes of images of ``shape``."""
    import great_expectations as gx

    s, (h, w, c) = cfg, shape
    expected_pairs = [f"{sp}:{k}" for sp in ("train", "val", "test") for k in range(n_classes)]
    min_split = n_classes * s.min_images_per_class
    tol = s.class_balance_tolerance
    E = gx.expectations
    max_dup = s.max_train_val_duplicates
    return [
        ("label_in_class_set", f"labels in 0..{n_classes - 1}", IMAGES,
         E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(n_classes)))),
        ("every_class_present", "every class has images in train, val and test", CLASSES,
         E.ExpectColumnDistinctValuesToContainSet(column="split_label", value_set=expected_pairs)),
        ("min_images_per_class", f"at least {s.min_images_per_class} images per class per split",
         CLASSES,
         E.ExpectColumnValuesToBeBetween(column="class_count", min_value=s.min_images_per_class)),
        ("class_balance", f"per-class counts within ±{tol:.0%} of the split's mean", CLASSES,
         E.ExpectColumnValuesToBeBetween(column="class_ratio", min_value=1 - tol,
                                         max_value=1 + tol)),
        ("min_split_size", f"each split has at least {min_split} images", CLASSES,
         E.ExpectColumnValuesToBeBetween(column="split_size", min_value=min_split)),
        ("expected_shape", f"every image is {h}x{w}x{c}", IMAGES,
         E.ExpectColumnValuesToBeInSet(column="shape", value_set=[f"{h}x{w}x{c}"])),
        ("pixel_min_in_range", "darkest pixel within 0..255", IMAGES,
         E.ExpectColumnValuesToBeBetween(column="min", min_value=0, max_value=255)),
        ("pixel_max_in_range", "brightest pixel within 0..255", IMAGES,
         E.ExpectColumnValuesToBeBetween(column="max", min_value=0, max_value=255)),
        ("no_nan_mean", "no NaN pixel statistics (mean)", IMAGES,
         E.ExpectColumnValuesToNotBeNull(column="mean")),
        ("no_nan_std", "no NaN pixel statistics (std)", IMAGES,
         E.ExpectColumnValuesToNotBeNull(column="std")),
        ("no_test_leak", "no train/val image also in test (content hash)", CLASSES,
         E.ExpectColumnValuesToBeBetween(column="leaks_into_test", max_value=0)),
        ("train_val_duplicates", f"at most {max_dup} val images also in train (content hash)",
         IMAGES,
         E.ExpectColumnValuesToBeBetween(column="train_val_duplicates", max_value=max_dup)),
    ]  # fmt: skip


def _validate(
    df: pd.DataFrame, checks: list[tuple[str, str, str, Any]]
) -> tuple[bool, dict[str, Any]]:
    """Run ``checks`` with GX on the per-image table ``df`` and its per-class summary; (all
    passed, GX's result per check name)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = ctx.data_sources.add_pandas("onceflow")
    # The per-image table is large: SUMMARY (counts and a sample of values). The per-class
    # table has a row per split and class: COMPLETE, each failing row named by split and class.
    named = {"result_format": "COMPLETE", "unexpected_index_column_names": CLASS_KEY}
    tables = {IMAGES: (df, "SUMMARY"), CLASSES: (class_table(df), named)}
    found: dict[str, Any] = {}
    success = True
    for table, (frame, result_format) in tables.items():
        batch = (
            source.add_dataframe_asset(table)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame})
        )
        suite = gx.ExpectationSuite(name=f"onceflow_{table}")
        # Ephemeral suites assign no ids: tag each expectation with its name to match results.
        for name, _, on, expectation in checks:
            if on == table:
                expectation.meta = {"onceflow_check": name}
                suite.add_expectation(expectation)
        validation = batch.validate(suite, result_format=result_format)
        success = success and bool(validation.success)
        found.update({r.expectation_config.meta["onceflow_check"]: r for r in validation.results})
    return success, found


def run_gate(
    df: pd.DataFrame, cfg: DataConfig, *, n_classes: int, shape: tuple[int, int, int]
) -> GateResult:
    """Validate the per-image table (and its per-class summary, :func:`class_table`) with GX
    under the ``data`` section's rules, for ``n_classes`` classes of images of ``shape``
    (H, W, C, what the source holds); word each failure from GX's own result for it."""
    checks = _checks(cfg, n_classes, shape)
    success, found = _validate(df, checks)
    results = []
    for name, desc, _, _ in checks:
        r = found[name]
        observed = "ok"
        if not r.success:
            observed = _words(name, n_classes)(dict(r.result), dict(r.expectation_config.kwargs))
        results.append(ExpectationResult(name, desc, bool(r.success), observed))
    splits = sorted(df["split"].unique())
    log.info("validation gate over %d images in splits %s: %s", len(df), splits,
             "passed" if success else "FAILED")  # fmt: skip
    n_dup = int(df["duplicates_train"].sum())
    return GateResult(success=success, n_rows=len(df), expectations=tuple(results),
                      n_train_val_duplicates=n_dup)  # fmt: skip
