"""Packaging real subnets of a (tiny, untrained) supernet: selection parsing, BN
recalibration, and package_target end to end (with fine-tuning; its own tests are in
tests/train/test_finetune.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from onceflow.data.prepared import PreparedData
from onceflow.errors import ConfigError, SearchError
from onceflow.package.manifest import load_manifest, verify_files
from onceflow.package.pipeline import (
    calibrated_subnet,
    package_metrics,
    package_target,
    parse_selection,
)
from onceflow.supernet import SearchSpace, Supernet
from tests.package.conftest import fast_params


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    space = SearchSpace(fast_params().supernet, in_channels=1, n_classes=10, image_size=28)
    return Supernet(space).eval()


def _selection(space: SearchSpace) -> dict:
    archs = [space.min_arch(), space.sample(np.random.default_rng(3)), space.min_arch()]
    return {
        "target": "ort-cpu",
        "selected": [
            {"budget_ms": b, "arch": str(a), "arch_json": a.to_json(), "predicted_accuracy": 0.5,
             "predicted_latency_ms": b / 2}
            for a, b in zip(archs, (3.0, 5.0, 1.0), strict=True)
        ],
    }  # fmt: skip


def test_parse_selection_dedupes_and_validates(supernet: Supernet) -> None:
    space = supernet.space
    cands = parse_selection(_selection(space), "selected.json", space)
    assert len(cands) == 2  # min arch selected for two budgets: packaged once
    assert cands[0].budgets_ms == (1.0, 3.0) and cands[0].arch_str == str(space.min_arch())
    bare = parse_selection([{"arch": str(space.max_arch())}], "sel", space)  # list + arch string
    assert bare[0].arch_json == space.max_arch().to_json() and bare[0].budgets_ms == ()
    bad = space.max_arch().to_json() | {"resolution": 99}
    with pytest.raises(ConfigError, match=r"sel: selected\[0\]"):
        parse_selection({"selected": [{"arch_json": bad}]}, "sel", space)
    with pytest.raises(SearchError, match="no selected archs"):
        parse_selection({"selected": []}, "sel", space)


def test_calibrated_subnet_reestimates_bn(supernet: Supernet, data: PreparedData) -> None:
    params = fast_params()
    sub = calibrated_subnet(supernet, supernet.space.min_arch(), data, params.package, seed=0)
    bn = next(m for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # re-estimated
    assert not sub.training


def test_package_target_end_to_end(supernet: Supernet, data: PreparedData, tmp_path: Path) -> None:
    params = fast_params(max_models=2)
    results = package_target(
        supernet, _selection(supernet.space), data, target_name="ort-cpu", params=params,
        lineage={"git": {"commit": None}}, content_hashes={"data": "x", "supernet": "y"},
        out_root=tmp_path, created_at="2024-01-01T00:00:00+00:00",
    )  # fmt: skip
    assert len(results) == 2 and len({r.model_id for r in results}) == 2
    for r in results:
        m = load_manifest(r.path)
        verify_files(r.path, m)
        assert m["arch"]["json"]["resolution"] == m["input"]["resolution"] == int(r.model_id[1:3])
        assert m["parity"]["passed"] and m["latency_ms"]["measured"] > 0
    metrics = package_metrics("ort-cpu", results)
    assert metrics["n_packages"] == 2 and metrics["all_parity_passed"]
    ratios = sorted(r.latency_ratio for r in results)
    assert metrics["latency_ratio_range"] == ratios and ratios[0] > 0
    assert metrics["latency_ratio_median"] == pytest.approx(sum(ratios) / 2)
    with pytest.raises(ConfigError, match="no target 'trt'"):
        package_target(
            supernet, _selection(supernet.space), data, target_name="trt", params=params,
            lineage={}, content_hashes={}, out_root=tmp_path, created_at="",
        )  # fmt: skip


def test_package_target_fine_tunes_then_recalibrates(
    supernet: Supernet, data: PreparedData, tmp_path: Path
) -> None:
    params = fast_params(max_models=1, finetune_epochs=1, finetune_batch_size=120)
    (r,) = package_target(
        supernet, _selection(supernet.space), data, target_name="ort-cpu", params=params,
        lineage={}, content_hashes={"data": "x", "supernet": "y"}, out_root=tmp_path,
        created_at="2024-01-01T00:00:00+00:00",
    )  # fmt: skip
    m = load_manifest(r.path)
    assert m["parity"]["passed"] and m["lineage"]["identity"]["package"]["finetune_epochs"] == 1
