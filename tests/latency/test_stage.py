"""`dvc repro latency_table@ort-cpu` in a temp copy of the repo, on a tiny space and protocol."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from onceflow import stage
from onceflow.latency import load_estimator
from onceflow.supernet import Supernet, load_supernet, save_supernet
from stages import latency_table
from tests.conftest import copy_repo, dvc_plot, run_dvc, write_prepared

TINY = {
    "latency": {
        "protocol": {"warmup": 2, "repeats": 12, "number": 1},
        "calibration_subnets": 8,
        "validation_subnets": 6,
    }
}


@pytest.mark.slow
def test_dvc_repro_latency_table(tmp_path: Path, tiny_space) -> None:
    repo = copy_repo(tmp_path / "repo", TINY)
    save_supernet(Supernet(tiny_space), repo / "models" / "supernet")  # random weights suffice
    write_prepared(repo / "data" / "prepared", n_per_class=4)
    run_dvc(repo, "repro", "--single-item", "device_results@ort-cpu", "latency_table@ort-cpu")

    out = repo / "latency" / "ort-cpu"
    assert {p.name for p in out.iterdir()} == {
        "lut.json", "estimator.json", "validation.json", "host.json"
    }  # fmt: skip
    host = json.loads((out / "host.json").read_text())  # the machine it was timed on
    assert host["hostname"] == socket.gethostname() and host["cores"] == os.cpu_count()
    assert host["cpu_model"] and {"load_1m_before", "load_1m_after", "lock_wait_s"} <= set(host)
    headline = json.loads((repo / "metrics" / "latency" / "ort-cpu.json").read_text())
    assert set(headline) == {"kendall_tau", "within_10pct"}
    metrics = json.loads((repo / "metrics" / "latency" / "ort-cpu.details.json").read_text())
    assert metrics["n_validation"] == 6 and metrics["host"] == host
    assert round(metrics["kendall_tau"], 4) == headline["kendall_tau"]
    assert metrics["lut_entries"] == len(tiny_space.unique_layer_specs())
    assert (repo / "plots" / "latency" / "ort-cpu.png").read_bytes()[:4] == b"\x89PNG"
    # The PNG's points as data that `dvc plots show` renders: one per validated subnet.
    x, y, rows = dvc_plot(repo, "plots/latency/ort-cpu.csv")
    records = json.loads((out / "validation.json").read_text())
    assert (x, y) == ("measured_ms", "predicted_ms") and len(rows) == len(records) > 0
    for row, rec in zip(rows, records, strict=True):
        assert (row["role"], row["arch"]) == (rec["role"], rec["arch"])
        assert float(row[x]) == pytest.approx(rec["measured_ms"], rel=1e-5)
        assert float(row[y]) == pytest.approx(rec["predicted_ms"], rel=1e-5)
    lut = json.loads((out / "lut.json").read_text())
    assert lut["schema_version"] == 1 and lut["protocol"]["repeats"] == 12
    assert "onnxruntime" in lut["environment"]["versions"]

    space = load_supernet(repo / "models" / "supernet").space
    est = load_estimator(out, space)
    rng = np.random.default_rng(0)
    pred = est.predict(space.encode_batch([space.sample(rng) for _ in range(20)]))
    assert pred.shape == (20,) and np.all(pred > 0)

    again = run_dvc(
        repo, "repro", "--single-item", "device_results@ort-cpu", "latency_table@ort-cpu"
    )
    assert "didn't change" in again.stdout or "up to date" in again.stdout


def test_stage_rejects_unknown_target(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("latency: {}\n")
    argv = ["--params", str(tmp_path / "params.yaml"), "--target", "nope"]
    names = ("supernet", "data", "out", "metrics", "details", "plot", "plot-data")
    argv += [f"--{k}={tmp_path / k}" for k in names]
    assert stage.run(latency_table.main, argv) == 2
    assert not (tmp_path / "out").exists()
