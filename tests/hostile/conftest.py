"""Fixtures of the bad-input suite: small valid inputs, built once per session, that each row
copies into its own workspace and breaks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import write_prepared
from tests.data.conftest import write_cifar_dataset, write_idx_dataset, write_imagefolder
from tests.hostile.harness import Workspace

PREPARE_OUTS = (
    "data/prepared", "metrics/data.json", "metrics/data.details.json", "reports/v.json",
    "reports/v.md",
)  # fmt: skip


def prepare_args() -> list[str]:
    return ["--out", "data/prepared", "--report", "reports/v.json", "--summary", "reports/v.md",
            "--metrics", "metrics/data.json"]  # fmt: skip


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small, valid dataset per source (read-only: rows copy what they break)."""
    root = tmp_path_factory.mktemp("sources")
    return {
        "fashion-mnist": write_idx_dataset(root / "fmnist", n_train_per_class=6),
        "cifar10": write_cifar_dataset(root / "cifar", per_class=3),
        "imagefolder": write_imagefolder(root / "folder", per_class=4, n_classes=3),
    }


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("prepared") / "prepared", n_per_class=8)


def copy_source(ws: Workspace, src: Path, source: str) -> Path:
    """Copy a valid dataset into the workspace and point data.path at it."""
    dest = ws.path("dataset")
    shutil.copytree(src, dest, symlinks=True)
    ws.params.setdefault("data", {}).update({"source": source, "path": str(dest)})
    return dest
