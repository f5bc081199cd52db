"""A fake but schema-correct finished run: every file the report reads, written the way the
stages write them (metrics through onceflow.metrics, PNGs from the stages' own plot code)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from onceflow import metrics as m
from onceflow.plots import latency_png, training_curves

TARGETS = ("ort-cpu", "ort-cpu-int8")


def png(title: str, seed: int = 0) -> bytes:
    """A small real chart (matplotlib), standing in for a stage's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=80)
    x = rng.uniform(0.3, 2.0, 200)
    ax.scatter(x, 0.8 + 0.05 * np.log(x) + rng.normal(0, 0.01, 200), s=6, c="0.6")
    ax.plot(np.sort(x), 0.82 + 0.05 * np.log(np.sort(x)), "C3-")
    ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _write(path: Path, data: bytes | str | dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict):
        data = json.dumps(data, indent=1)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def write_fake_run(root: Path, targets: tuple[str, ...] = TARGETS, gate_ok: bool = True) -> Path:
    params = {
        "latency": {
            "targets": {
                t: {
                    "backend": "onnxruntime",
                    "device": "cpu",
                    "precision": "int8" if "int8" in t else "fp32",
                }
                for t in targets
            }
        }
    }
    _write(root / "params.yaml", yaml.safe_dump(params))
    exps = [
        {"name": n, "description": d, "success": True, "observed": "ok"}
        for n, d in (
            ("label_in_class_set", "labels in 0..9"),
            ("class_balance", "per-class counts within ±50% of the split's mean"),
            ("no_test_leak", "no train/val image also in test (content hash)"),
        )
    ]
    if not gate_ok:
        exps[2] = {**exps[2], "success": False, "observed": "12 test images also in train"}
    _write(
        root / "reports/data_validation.json",
        {
            "success": gate_ok,
            "n_rows": 70000,
            "great_expectations_version": "1.24.1",
            "expectations": exps,
        },
    )
    data = {
        "n_train": 54000,
        "n_val": 6000,
        "n_test": 10000,
        "n_classes": 10,
        "validation_success": gate_ok,
    }
    m.write_metrics(root / "metrics/data.json", m.data_headline(data), data)
    sup = {
        "val_acc_max": 0.9012,
        "val_acc_min": 0.8544,
        "val_acc_mid": 0.8831,
        "train_seconds": 1502.3,
        "epochs": 3.0,
        "space_size": 4_000_000,
        "params": 412345,
    }
    m.write_metrics(root / "metrics/supernet.json", m.supernet_headline(sup), sup)
    recs = [
        {
            "epoch": i,
            "train_loss_max": 1.5 / i,
            "train_loss_distill": 1.2 / i,
            "val_acc_max": 0.8 + 0.03 * i,
            "val_acc_min": 0.75 + 0.03 * i,
        }
        for i in (1, 2, 3)
    ]
    fig, buf = training_curves(recs), io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    _write(root / "dvclive/train_supernet/plots/images/training_curves.png", buf.getvalue())
    pred = {
        "n_samples": 150,
        "model": "gbm",
        "kendall_tau": 0.81,
        "spearman": 0.94,
        "rmse_pp": 0.41,
        "n_train": 120,
        "n_holdout": 30,
        "label_noise": {"noise_pp": 0.2, "tau_ceiling": 0.86},
    }
    _write(root / "metrics/predictor.json", pred)  # the search engineer's file: either layout
    _write(root / "plots/predictor_learning_curve.png", png("learning curve", 1))
    for i, t in enumerate(targets):
        recs = [
            {
                "arch": f"a{j}",
                "role": "calibration" if j < 5 else "validation",
                "measured_ms": 0.5 + 0.1 * j,
                "predicted_ms": (0.5 + 0.1 * j) * (1.03 - 0.01 * (j % 5)),
                "raw_lut_sum_ms": 0.4 + 0.1 * j,
                "cv": 0.02,
            }
            for j in range(15)
        ]
        lat = {
            "target": t,
            "backend": "onnxruntime",
            "within_10pct": 0.96,
            "kendall_tau": 0.93,
            "mape": 0.031,
            "mape_uncalibrated": 0.21,
            "calibration_model": "affine",
            "noise_cv": 0.012,
            "lut_entries": 620,
            "call_overhead_ms": 0.021,
            "clock": "thread_cpu",
            "total_seconds": 31.2,
        }
        m.write_metrics(root / f"metrics/latency/{t}.json", m.latency_headline(lat), lat)
        _write(root / f"plots/latency/{t}.png", latency_png(recs, f"{t}: within ±10% 96%"))
        picks = [
            {
                "budget_ms": b,
                "predicted_accuracy": 0.85 + 0.01 * k,
                "predicted_latency_ms": b * 0.95,
                "random_best_accuracy": 0.84 + 0.01 * k,
                "gain_over_random_pp": 1.0,
            }
            for k, b in enumerate((0.6, 1.0, 1.6))
        ]
        _write(
            root / f"metrics/search/{t}.json",
            {
                "target": t,
                "hypervolume": 0.412,
                "front_size": 37,
                "n_evaluations": 12000,
                "seconds": 8.1,
                "selected": picks,
            },
        )
        _write(root / f"plots/search/{t}.png", png(f"search@{t}: Pareto front", 2 + i))
        pkgs = []
        for k, b in enumerate((0.6, 1.0)):
            mid = f"r28-{i}{k}aabbccddee"
            man = {
                "format_version": 1,
                "model_id": mid,
                "target": t,
                "backend": "onnxruntime",
                "arch": {"string": f"r28 k3,5 e4,6 d2,3 #{k}", "json": {}},
                "test_accuracy": 0.86 + 0.01 * k,
                "predicted_accuracy": 0.85 + 0.01 * k,
                "latency_ms": {
                    "measured": b * 0.97,
                    "predicted": b * 0.95,
                    "ratio": 1.02,
                    "budget": b,
                },
                "parity": {"passed": True, "max_abs_diff": 1e-6},
                "lineage": {
                    "git": {"commit": "0123456789abcdef0123", "dirty": False},
                    "dvc_lock": {"supernet": {"path": "models/supernet", "md5": "ab12.dir"}},
                    "identity": {"inputs": {"data": "d" * 64, "supernet": "e" * 64}},
                },
                "onceflow_version": "0.1.0",
                "created_at": "2026-12-01T12:00:00+00:00",
            }
            _write(root / f"artifacts/{t}/{mid}/manifest.json", man)
            pkgs.append(
                {"model_id": mid, "test_accuracy": man["test_accuracy"], "latency_ratio": 1.02}
            )
        pm = {"target": t, "n_packages": 2, "all_parity_passed": True, "packages": pkgs}
        m.write_metrics(root / f"metrics/package/{t}.json", m.package_headline(pm), pm)
    pub = {
        "registry": "file:///srv/registry",
        "n_packages": 2 * len(targets),
        "n_published": 2 * len(targets),
        "n_unchanged": 0,
        "packages": [
            {"target": t, "model_id": p.parent.name, "status": "published"}
            for t in targets
            for p in (root / "artifacts" / t).glob("*/manifest.json")
        ],
    }
    m.write_metrics(root / "metrics/publish.json", m.publish_headline(pub), pub)
    if len(targets) > 1:
        _write(root / "metrics/specialization.json", {"gain_pp": 0.7})
        _write(root / "metrics/specialization.details.json", specialization_details(targets))
        _write(root / "plots/specialization.png", png("specialization matrix", 9))
    return root


# Default-sized arch strings (4 stages of up to 3 blocks): far too wide for a table cell.
ARCHS = (
    "r28-d3_2_3_3-w1_0.75_1_1-k7_5_3_3_5_7_3_5_7_3_5-e4_3_2_2_4_3_4_2_3_4_3",
    "r24-d2_2_3_1-w0.75_0.75_1_1-k3_5_3_3_5_7_3_5-e2_3_2_2_4_3_4_2",
)


def specialization_details(targets: tuple[str, ...]) -> dict:
    """``metrics/specialization.details.json`` as the stage writes it (see a real run)."""
    slots = {t: [{"budget_ms": b * (1 + i), "arch": ARCHS[k]} for k, b in enumerate((0.6, 1.0))]
             for i, t in enumerate(targets)}  # fmt: skip
    cells = [
        {"source": src, "host": host, "slot": k, "same_arch": k == 1,
         "source_arch": slots[src][k]["arch"], "host_arch": slots[host][k]["arch"],
         "host_budget_ms": slots[host][k]["budget_ms"], "source_latency_on_host_ms": 0.7,
         "host_pick_latency_ms": 0.55, "source_measured_on_host_ms": 0.74,
         "host_pick_measured_ms": 0.57, "over_budget_pct": 16.7 if k == 0 else -3.0,
         "within_budget": k != 0, "source_accuracy_on_host": 0.861,
         "host_pick_accuracy": 0.868, "specialization_gain_pp": 0.7}
        for src in targets for host in targets if src != host for k in range(2)
    ]  # fmt: skip
    return {
        "target_names": list(targets),
        "n_slots": 2,
        "picks_coincide": False,
        "budget_violations": 2,
        "cases": len(cells),
        "foreign_within_budget_less_accurate": 1,
        "foreign_within_budget_as_accurate": 1,
        "pairs": {
            f"{a}->{b}": {
                "same_picks": 1,
                "budget_violations": 1,
                "measured_latency_ratio_mean": 1.04,
                "max_over_budget_pct": 16.7,
                "mean_gain_pp": 0.7,
                "max_gain_pp": 1.4,
            }
            for a in targets
            for b in targets
            if a != b
        },  # fmt: skip
        "latency_rank_correlation": {
            f"{targets[0]}|{b}": {"n": 5, "kendall_tau": 0.8, "spearman": 0.9} for b in targets[1:]
        },
        "verdict": "a target's own pick beats the others' by 0.70 pp on average",
        "targets": [
            {"name": t, "precision": "int8" if "int8" in t else "fp32", "slots": slots[t]}
            for t in targets
        ],
        "cells": cells,
        "quantization_drop_pp": {
            t: {"mean_pp": 0.4, "max_pp": 0.6, "n": 2} for t in targets if "int8" in t
        },  # fmt: skip
        "evaluated_here": [{"arch": ARCHS[0], "precision": "int8"}],
    }


def write_baseline(run: Path, dest: Path) -> Path:
    """``run`` as an earlier run would have left it: a weaker supernet and predictor, picks
    less accurate and slower (for the comparison section)."""
    shutil.copytree(run, dest)
    sup = json.loads((dest / "metrics/supernet.details.json").read_text())
    sup.update(val_acc_max=0.8931, val_acc_min=0.8402)
    m.write_metrics(dest / "metrics/supernet.json", m.supernet_headline(sup), sup)
    pred = json.loads((dest / "metrics/predictor.json").read_text())
    _write(dest / "metrics/predictor.json", {**pred, "kendall_tau": 0.74})
    for t in TARGETS:
        s = json.loads((dest / f"metrics/search/{t}.json").read_text())
        for p in s["selected"]:
            p.update(predicted_accuracy=p["predicted_accuracy"] - 0.012,
                     predicted_latency_ms=p["predicted_latency_ms"] * 1.1)  # fmt: skip
        _write(dest / f"metrics/search/{t}.json", s)
    return dest


@pytest.fixture(scope="session")
def _fake_run_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_run(tmp_path_factory.mktemp("fake") / "run")


@pytest.fixture
def fake_run(_fake_run_once: Path, tmp_path: Path) -> Path:
    """A fresh copy per test (tests may damage it)."""
    return Path(shutil.copytree(_fake_run_once, tmp_path / "run"))
