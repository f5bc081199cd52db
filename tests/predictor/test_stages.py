"""`dvc repro predictor search@ort-cpu` in a temp copy of the repo on tiny params, with the
upstream outputs (supernet, prepared data, latency table) written directly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from onceflow import stage
from onceflow.config import PredictorConfig
from onceflow.supernet import Arch, SearchSpace
from stages import search
from tests.conftest import copy_repo, dvc_plot, run_dvc, write_prepared
from tests.predictor.conftest import write_latency_dir, write_supernet

TINY = {
    "predictor": {
        "n_samples": 16, "calib_images": 20, "eval_images": 30, "batch_size": 16, "k_folds": 3,
        "curve_points": 2, "mlp_epochs": 40, "mlp_hidden": 16, "gbm_iterations": 20,
        "retest": 3,
    },
    "search": {
        "default_budgets": {"unit": "fraction", "values": [0.3, 0.8]},
        "nsga": {"pop_size": 12, "generations": 4, "polish_sweeps": 1},
        "evolution": {"population": 12, "generations": 4},
        "random_samples": 300,
    },
}  # fmt: skip


@pytest.mark.slow
def test_dvc_repro_predictor_and_search(tmp_path: Path, tiny_space: SearchSpace) -> None:
    repo = copy_repo(tmp_path / "repo", TINY)
    write_supernet(repo / "models" / "supernet", tiny_space)
    write_prepared(repo / "data" / "prepared", n_per_class=4)
    write_latency_dir(repo / "latency" / "ort-cpu", tiny_space)
    run_dvc(repo, "repro", "--single-item", "predictor", "search@ort-cpu")

    rows = list(csv.DictReader((repo / "data/predictor/arch_acc.csv").open()))
    assert len(rows) == 16 and {r["arch"] for r in rows} >= {
        str(tiny_space.min_arch()),
        str(tiny_space.max_arch()),
    }
    pm = json.loads((repo / "metrics/predictor.json").read_text())  # headline scalars only
    assert set(pm) == {"kendall_tau", "ceiling"}  # the rest is in the details
    assert all(v is None or isinstance(v, int | float) for v in pm.values())
    pd = json.loads((repo / "metrics/predictor.details.json").read_text())
    assert (
        pd["n_samples"] == 16
        and pd["model"] in ("mlp", "ridge", "gbm", "ensemble")
        and pd["kendall_tau"] == pytest.approx(pm["kendall_tau"], abs=1e-4)
    )
    assert {"spearman", "rmse", "learning_curve", "kendall_tau_vs_accuracy"} <= set(pd)
    assert set(pd["holdout"]) == {"mlp", "ridge", "gbm", "ensemble"}
    assert {"noise_pp", "tau_ceiling", "reliability"} <= set(pd["label_noise"])
    assert (repo / "models/predictor/predictor.json").is_file()
    assert (repo / "plots/predictor_learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    x, y, rows = dvc_plot(repo, "plots/predictor_holdout.csv")  # the held-out points as data
    assert (x, y) == ("label_pct", "predicted_pct") and len(rows) == pd["n_holdout"]
    assert {r["model"] for r in rows} == {pd["model"]}
    assert all(0 <= float(r[x]) <= 100 for r in rows)

    sel = json.loads((repo / "search/ort-cpu/selected.json").read_text())["selected"]
    pareto = json.loads((repo / "search/ort-cpu/pareto.json").read_text())["points"]
    assert len(sel) == 2 and len(pareto) >= 2
    for s in sel:
        arch = Arch.parse(s["arch"])
        tiny_space.validate(arch)
        assert Arch.from_json(s["arch_json"]) == arch
        assert s["predicted_latency_ms"] <= s["budget_ms"]
    lat = [p["predicted_latency_ms"] for p in pareto]
    assert lat == sorted(lat)
    sm = json.loads((repo / "metrics/search/ort-cpu.json").read_text())
    assert set(sm) == {"top1", "models", "gain_pp"} and sm["models"] == 2  # headline only
    sd = json.loads((repo / "metrics/search/ort-cpu.details.json").read_text())
    assert sd["hypervolume"] >= 0 and sd["n_evaluations"] > 0 and sd["seconds"] > 0
    assert sd["rows"] >= sd["n_evaluations"]
    assert all(0 <= s["real_accuracy"] <= 1 for s in sd["selected"])
    assert (repo / "plots/search/ort-cpu.png").read_bytes()[:4] == b"\x89PNG"
    assert (repo / "plots/search/ort-cpu.csv").read_text().startswith("latency_ms,accuracy,kind")

    # A change that does not affect measurements refits from the persisted CSV: nothing is
    # measured again.
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("mlp_epochs: 40", "mlp_epochs: 41"))
    again = run_dvc(repo, "repro", "--single-item", "predictor", ONCEFLOW_LOG_LEVEL="INFO")
    assert "16 already measured, 0 to go" in again.stdout + again.stderr


def test_impossible_budget_fails_at_once_naming_the_lowest_latency(
    tmp_path: Path, tiny_space: SearchSpace, caplog
) -> None:
    from onceflow.predictor import AccuracyPredictor, ArchEncoder, save_predictor
    from onceflow.predictor.models import make_model

    write_supernet(tmp_path / "supernet", tiny_space)
    write_latency_dir(tmp_path / "lat", tiny_space)
    enc = ArchEncoder(tiny_space)
    x = tiny_space.encode_batch([tiny_space.min_arch(), tiny_space.max_arch()] * 3)
    model = make_model("ridge", PredictorConfig())
    save_predictor(AccuracyPredictor(enc, model.fit(enc.features(x), [0.5, 0.9] * 3)),
                   tmp_path / "pred", {})  # fmt: skip
    (tmp_path / "params.yaml").write_text(
        "latency:\n  targets:\n    ort-cpu: {budgets: {unit: ms, values: [0.001]}}\n"
    )
    argv = ["--params", str(tmp_path / "params.yaml"), "--target", "ort-cpu",
            "--supernet", str(tmp_path / "supernet"), "--predictor", str(tmp_path / "pred"),
            "--latency", str(tmp_path / "lat")]  # fmt: skip
    names = ("data", "out", "metrics", "details", "plot", "plot-data")
    argv += [f"--{k}={tmp_path / k}" for k in names]
    assert stage.run(search.main, argv) == 1
    assert "latency budget 0.001 ms is infeasible: the lowest reachable value is" in caplog.text
    assert str(tiny_space.min_arch()) in caplog.text
    assert not (tmp_path / "out").exists()


def test_search_budgets_moved_is_a_config_error(tmp_path: Path, caplog) -> None:
    (tmp_path / "params.yaml").write_text("search:\n  budgets:\n    ort-cpu: {}\n")
    argv = ["--params", str(tmp_path / "params.yaml"), "--target", "ort-cpu"]
    names = ("supernet", "data", "predictor", "latency", "out", "metrics", "details", "plot")
    names += ("plot-data",)
    argv += [f"--{k}={tmp_path / k}" for k in names]
    assert stage.run(search.main, argv) == 2
    assert "search.budgets moved" in caplog.text and "latency.targets.<name>.budgets" in caplog.text
