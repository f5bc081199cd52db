"""stages.specialize_report on a toy space: two real latency tables (ORT fp32 and int8), picks
written by hand, no packages (so every accuracy is measured by the report itself)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from onceflow import stage
from onceflow.config import parse_params
from onceflow.io import write_json_atomic
from onceflow.latency import build_latency_table, make_backend
from onceflow.latency.estimator import ESTIMATOR_FILE, estimator_json
from onceflow.latency.lut import LUT_FILE
from onceflow.supernet import Supernet, build_layer, save_supernet
from stages import specialize_report
from tests.conftest import tiny_supernet_config, write_prepared

PARAMS = {
    "base": {"threads": 1},
    "supernet": tiny_supernet_config().model_dump(mode="json"),
    "latency": {
        "targets": {
            "cpu": {"backend": "onnxruntime"},
            "cpu-int8": {"precision": "int8", "options": {"int8_calibration_images": 4}},
        },
        "protocol": {"warmup": 1, "repeats": 3, "sessions": 1},
        "calibration_subnets": 3,
        "validation_subnets": 3,
    },
    "package": {"bn_calibration_images": 32, "batch_size": 64},
}


def test_report_stage_writes_matrix_details_and_plot(tmp_path: Path, tiny_space) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    params = parse_params(PARAMS)
    net = Supernet(tiny_space).eval()
    save_supernet(net, tmp_path / "models" / "supernet")
    write_prepared(tmp_path / "data", n_per_class=4)
    images = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    other = tiny_space.sample(np.random.default_rng(3))
    assert other not in (tiny_space.min_arch(), tiny_space.max_arch())
    picks = {"cpu": [tiny_space.min_arch(), other]}
    picks["cpu-int8"] = [tiny_space.min_arch(), tiny_space.max_arch()]
    for name, target in params.latency.targets.items():
        be = make_backend(target, images)
        res = build_latency_table(tiny_space, build_layer, net.extract, be, params.latency, name)
        out = tmp_path / "latency" / name
        write_json_atomic(out / LUT_FILE, res.lut.to_json())
        write_json_atomic(out / ESTIMATOR_FILE, estimator_json(res.calibration, name))
        write_json_atomic(out / "validation.json", res.records)
        sel = [
            {"budget_ms": b, "arch_json": a.to_json()}
            for b, a in zip([0.5, 5.0], picks[name], strict=True)
        ]
        write_json_atomic(tmp_path / "search" / name / "selected.json", {"selected": sel})
    argv = ["--params", str(tmp_path / "params.yaml")]
    for k, v in {
        "supernet": "models/supernet", "data": "data", "latency": "latency", "search": "search",
        "artifacts": "artifacts", "metrics": "m.json", "details": "d.json", "plot": "p.png",
        "plot-data": "p.csv",
    }.items():  # fmt: skip
        argv += [f"--{k}", str(tmp_path / v)]
    assert stage.run(specialize_report.main, argv) == 0

    head = json.loads((tmp_path / "m.json").read_text())
    det = json.loads((tmp_path / "d.json").read_text())
    assert det["target_names"] == ["cpu", "cpu-int8"] and det["n_slots"] == 2
    assert set(head) == {"gain_pp"}
    assert not det["picks_coincide"] and set(det["pairs"]) == {"cpu->cpu-int8", "cpu-int8->cpu"}
    assert det["pairs"]["cpu->cpu-int8"]["same_picks"] == 1  # slot 0: both chose the min arch
    corr = det["latency_rank_correlation"]["cpu|cpu-int8"]
    # Three validation subnets: tau is one of the four values three pairs allow.
    assert corr["n"] == 3 and round(corr["kendall_tau"] * 3) in (-3, -1, 1, 3)
    assert corr["kendall_tau"] * 3 == pytest.approx(round(corr["kendall_tau"] * 3))
    cells = det["cells"]
    assert len(cells) == 4 and all(0.0 <= c["source_accuracy_on_host"] <= 1.0 for c in cells)
    assert all(
        c["source_measured_on_host_ms"] > 0 and c["host_pick_measured_ms"] > 0 for c in cells
    )
    assert det["pairs"]["cpu->cpu-int8"]["measured_latency_ratio_mean"] > 0
    # Each distinct (arch, precision) was evaluated once: 3 archs x 2 precisions.
    assert len(det["evaluated_here"]) == 6
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    # The PNG's points as data: each host's own picks, then the other target's on it.
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    c8 = "cpu-int8"
    assert [(r["host"], r["source"]) for r in rows] == [
        ("cpu", "cpu"), ("cpu", "cpu"), ("cpu", c8), ("cpu", c8),
        (c8, c8), (c8, c8), (c8, "cpu"), (c8, "cpu"),
    ]  # fmt: skip
    on_host = {(c["host"], c["source"], c["slot"]): c for c in cells}
    for r in rows:
        if r["host"] != r["source"]:
            c = on_host[(r["host"], r["source"], int(r["slot"]))]
            assert float(r["latency_ms"]) == pytest.approx(c["source_latency_on_host_ms"], 1e-5)
            assert float(r["accuracy"]) == pytest.approx(c["source_accuracy_on_host"], 1e-5)


def test_report_stage_missing_selection_is_one_clear_error(tmp_path: Path, tiny_space) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    save_supernet(Supernet(tiny_space), tmp_path / "sn")
    write_prepared(tmp_path / "data", n_per_class=2)
    argv = ["--params", str(tmp_path / "params.yaml")]
    for k in ("latency", "search", "artifacts", "metrics", "details", "plot", "plot-data"):
        argv += [f"--{k}", str(tmp_path / k)]
    argv += ["--supernet", str(tmp_path / "sn"), "--data", str(tmp_path / "data")]
    assert stage.run(specialize_report.main, argv) == 2
    assert not (tmp_path / "metrics").exists()
