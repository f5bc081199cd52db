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

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateSettings:
    n_classes: int
    shape: tuple[int, int, int]  # H, W, C every image must have
    min_images_per_class: int
    class_balance_tolerance: float
    max_train_val_duplicates: int = 0  # val images whose content is also in train


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


def _observe(
    df: pd.DataFrame, column: str, bad: pd.Series, fmt: Callable[[pd.DataFrame], str]
) -> str:
    rows = df.loc[bad]
    return "ok" if rows.empty else fmt(rows)


def _counts(series: pd.Series) -> str:
    return ", ".join(f"{k}: {v}" for k, v in series.items())


def _class_list(rows: pd.DataFrame) -> str:
    pairs = rows.groupby(["split", "label"])["class_count"].first()
    items = [f"{s} class {lbl}: {n}" for (s, lbl), n in pairs.items()]
    return ", ".join(items[:8]) + (" ..." if len(items) > 8 else "")


def run_gate(df: pd.DataFrame, settings: GateSettings) -> GateResult:
    """Validate the per-image table with GX; describe each failure with its observed value."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    s = settings
    h, w, c = s.shape
    splits = sorted(df["split"].unique())
    expected_pairs = [f"{sp}:{k}" for sp in ("train", "val", "test") for k in range(s.n_classes)]
    min_split = s.n_classes * s.min_images_per_class
    tol = s.class_balance_tolerance
    E = gx.expectations
    present = set(df["split_label"])
    n_dup = int(df["duplicates_train"].sum())
    max_dup = s.max_train_val_duplicates
    checks: list[tuple[str, str, object, str]] = [
        ("label_in_class_set", f"labels in 0..{s.n_classes - 1}",
         E.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(s.n_classes))),
         _observe(df, "label", ~df["label"].between(0, s.n_classes - 1),
                  lambda r: f"labels {sorted(set(r['label']))[:5]} ({len(r)} images)")),
        ("every_class_present", "every class has images in train, val and test",
         E.ExpectColumnDistinctValuesToContainSet(column="split_label", value_set=expected_pairs),
         ("missing " + ", ".join(p for p in expected_pairs if p not in present)[:200])
         if any(p not in present for p in expected_pairs) else "ok"),
        ("min_images_per_class", f"at least {s.min_images_per_class} images per class per split",
         E.ExpectColumnValuesToBeBetween(column="class_count", min_value=s.min_images_per_class),
         _observe(df, "class_count", df["class_count"] < s.min_images_per_class, _class_list)),
        ("class_balance", f"per-class counts within ±{tol:.0%} of the split's mean",
         E.ExpectColumnValuesToBeBetween(column="class_ratio", min_value=1 - tol,
                                         max_value=1 + tol),
         _observe(df, "class_ratio", ~df["class_ratio"].between(1 - tol, 1 + tol), _class_list)),
        ("min_split_size", f"each split has at least {min_split} images",
         E.ExpectColumnValuesToBeBetween(column="split_size", min_value=min_split),
         _observe(df, "split_size", df["split_size"] < min_split,
                  lambda r: _counts(r.groupby("split")["split_size"].first()))),
        ("expected_shape", f"every image is {h}x{w}x{c}",
         E.ExpectColumnValuesToBeInSet(column="shape", value_set=[f"{h}x{w}x{c}"]),
         _observe(df, "shape", df["shape"] != f"{h}x{w}x{c}",
                  lambda r: f"shapes {sorted(set(r['shape']))[:3]} ({len(r)} images)")),
        ("pixel_min_in_range", "darkest pixel within 0..255",
         E.ExpectColumnValuesToBeBetween(column="min", min_value=0, max_value=255),
         _observe(df, "min", ~df["min"].between(0, 255), lambda r: f"min {r['min'].min()}")),
        ("pixel_max_in_range", "brightest pixel within 0..255",
         E.ExpectColumnValuesToBeBetween(column="max", min_value=0, max_value=255),
         _observe(df, "max", ~df["max"].between(0, 255), lambda r: f"max {r['max'].max()}")),
        ("no_nan_mean", "no NaN pixel statistics (mean)",
         E.ExpectColumnValuesToNotBeNull(column="mean"),
         _observe(df, "mean", df["mean"].isna(), lambda r: f"{len(r)} NaN")),
        ("no_nan_std", "no NaN pixel statistics (std)",
         E.ExpectColumnValuesToNotBeNull(column="std"),
         _observe(df, "std", df["std"].isna(), lambda r: f"{len(r)} NaN")),
        ("no_test_leak", "no train/val image also in test (content hash)",
         E.ExpectColumnValuesToBeInSet(column="leaks_into_test", value_set=[False]),
         _observe(df, "leaks_into_test", df["leaks_into_test"].astype(bool),
                  lambda r: f"{len(r)} images ({_counts(r['split'].value_counts())})")),
        ("train_val_duplicates", f"at most {max_dup} val images also in train (content hash)",
         E.ExpectColumnValuesToBeBetween(column="train_val_duplicates", max_value=max_dup),
         "ok" if n_dup <= max_dup else
         f"{n_dup} val images duplicate train images (allowed: data.max_train_val_duplicates = "
         f"{max_dup}); remove the duplicates or raise data.max_train_val_duplicates"),
    ]  # fmt: skip

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        ctx.data_sources.add_pandas("onceflow")
        .add_dataframe_asset("images")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": df})
    )
    suite = gx.ExpectationSuite(name="onceflow_images")
    # Ephemeral suites assign no ids: tag each expectation with its name to match results back.
    for name, _, expectation, _ in checks:
        expectation.meta = {"onceflow_check": name}
        suite.add_expectation(expectation)
    validation = batch.validate(suite, result_format="SUMMARY")
    ok = {r.expectation_config.meta["onceflow_check"]: bool(r.success) for r in validation.results}
    results = tuple(
        ExpectationResult(name, desc, ok[name], "ok" if ok[name] else observed)
        for name, desc, _, observed in checks
    )
    log.info("validation gate over %d images in splits %s: %s", len(df), splits,
             "passed" if validation.success else "FAILED")  # fmt: skip
    return GateResult(success=bool(validation.success), n_rows=len(df), expectations=results,
                      n_train_val_duplicates=n_dup)  # fmt: skip
