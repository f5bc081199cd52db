"""Throwaway copies of the project as git + DVC repos (benchmarks, end-to-end tests).

A copy holds the project's source files (what git tracks, plus untracked files it does not
ignore), committed in a fresh git repo, so it has the real ``dvc.yaml``, ``params.yaml`` and
stage code but none of the outputs; :data:`TINY_PARAMS` shrinks every stage so the whole
pipeline runs in about a minute.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

# A deep_merge value that removes its key (JSON- and YAML-safe, unlike a sentinel object).
DROP = "<drop>"

# Every stage on toy sizes (same model shapes as the stage tests use): the real code paths,
# in seconds each on 2 CPU cores.
TINY_PARAMS: dict[str, Any] = {
    "base": {"threads": 1},
    "data": {"max_train": 1000, "max_test": 300},
    "supernet": {
        "resolutions": [24, 28],
        "kernels": [3, 5],
        "expands": [2.0, 3.0],
        "depths": [1, 2],
        "widths": [0.5, 1.0],
        "stem_channels": 8,
        "stages": [
            {"channels": 8, "stride": 2, "se": False, "act": "relu"},
            {"channels": 16, "stride": 2, "se": True, "act": "hswish"},
        ],
        "head_channels": 32,
    },
    "train": {
        "phases": [
            {
                "name": "full",
                "epochs": 1,
                "lr": 0.1,
                "warmup_epochs": 0.3,
                "elastic": ["resolution", "kernel", "depth", "expand", "width"],
                "reorder_channels": False,
            }
        ],
        "batch_size": 64,
        "eval_batch_size": 100,
        "epoch_eval_images": 100,
        "bn_calib_images": 100,
    },
    "latency": {
        # the two ORT default targets only: torch-eager's stages would add a third of every
        # pipeline test's per-target work (tests/latency covers its measured-only table)
        "targets": {"torch-eager": DROP},
        "protocol": {"warmup": 2, "repeats": 5},
        "calibration_subnets": 6,
        "validation_subnets": 5,
    },
    "predictor": {
        "n_samples": 16,
        "calib_images": 20,
        "eval_images": 30,
        "batch_size": 16,
        "k_folds": 3,
        "curve_points": 2,
        "mlp_epochs": 40,
        "mlp_hidden": 16,
        "gbm_iterations": 20,
    },
    "search": {
        "default_budgets": {"unit": "fraction", "values": [0.5]},
        "nsga": {"pop_size": 12, "generations": 4, "polish_sweeps": 1},
        "evolution": {"population": 12, "generations": 4},
        "random_samples": 300,
    },
    # A one-epoch toy supernet is near chance: its argmax flips under int8 rounding on a few
    # percent of images, so the int8 parity gate (tested on its own in tests/package) is loosened.
    "package": {
        "bn_calibration_images": 64,
        "batch_size": 64,
        "max_models": 1,
        "int8_min_agreement": 0.5,
    },
}


def deep_merge(base: dict, update: Mapping[str, Any]) -> dict:
    """``base`` updated in place by ``update``, recursing into mappings present in both; a
    :data:`DROP` value removes the key."""
    for k, v in update.items():
        if v == DROP:
            base.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(base.get(k), dict):
            deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def project_files(root: str | os.PathLike[str]) -> list[str]:
    """Source files of the project at ``root``: tracked + untracked-not-ignored (git)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (Path(root) / f).is_file()]


def copy_project(
    root: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    params_update: Mapping[str, Any] | None = None,
) -> Path:
    """Copy the project at ``root`` to ``dest`` as a fresh git + DVC repo, committed; merge
    ``params_update`` into its params.yaml (the new file loses params.yaml's comments)."""
    root, dest = Path(root), Path(dest)
    for rel in project_files(root):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, dest / rel)
    if params_update:
        path = dest / "params.yaml"
        params = deep_merge(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, params_update)
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    if not (dest / ".dvc").is_dir():
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, env=env, check=True)
    ident = ["-c", "user.name=onceflow tests", "-c", "user.email=tests@onceflow.invalid"]
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", *ident, "commit", "-q", "-m", "copy"], cwd=dest, check=True)
    return dest
