"""Unit tests of the orchestration library: failure classification, the run story's strict
reading of metrics, `-S` overrides, targets and pools, the stage outcome records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import onceflow
from onceflow.errors import ConfigError, DataError
from onceflow.orchestration.dvc import (
    BadInput,
    StageFailed,
    Transient,
    classify,
    dvc_env,
    set_params,
)
from onceflow.orchestration.story import pareto_markdown, picks, story_markdown
from onceflow.orchestration.targets import read_targets, work_pools
from onceflow.stage import OUTCOME_ENV, WrongLibrary, check_library


def _start(stage: str) -> dict:
    return {"stage": stage, "event": "start", "exit_code": None, "error": ""}


def _end(stage: str, code: int, error: str = "boom") -> dict:
    return {"stage": stage, "event": "end", "exit_code": code, "error": error}


def test_failures_are_classified_from_stage_records_not_messages() -> None:
    bad = classify("repro", [_start("search@a"), _end("search@a", 2, "params.yaml: x: bad")], "")
    assert type(bad) is BadInput and "search@a" in str(bad) and "params.yaml: x: bad" in str(bad)
    # A stage that started and never reported an end was killed (OOM, lost worker).
    assert type(classify("repro", [_start("prepare"), _start("train_supernet")], "")) is Transient
    assert type(classify("repro", [_start("publish"), _end("publish", 1)], "")) is Transient
    assert type(classify("repro", [_start("search@a"), _end("search@a", 1)], "")) is StageFailed
    assert type(classify("repro", [], "dvc refused")) is StageFailed  # no stage ran: DVC itself
    assert type(classify("push", [], "network")) is Transient
    # Bad input wins even for object-store I/O: retrying a wrong registry URI cannot help.
    assert type(classify("repro", [_start("publish"), _end("publish", 2)], "")) is BadInput
    # Exit 75 (a service did not answer) is transient whichever stage reports it.
    down = classify("repro", [_start("search@a"), _end("search@a", 75, "S3 at :9 down")], "")
    assert type(down) is Transient and "S3 at :9 down" in str(down)


def test_dvc_subprocesses_import_the_workspace_library_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", f"/elsewhere/src{os.pathsep}{tmp_path}/src")
    env = dvc_env(tmp_path, project=tmp_path / "checkout")
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths == [str(tmp_path / "src"), str(tmp_path), "/elsewhere/src"]
    assert env["ONCEFLOW_PROJECT_ROOT"] == str(tmp_path / "checkout")
    assert "ONCEFLOW_PROJECT_ROOT" not in dvc_env(tmp_path)


def test_a_stage_refuses_a_library_from_another_tree(tmp_path: Path) -> None:
    (tmp_path / "src" / "onceflow").mkdir(parents=True)
    (tmp_path / "src" / "onceflow" / "__init__.py").write_text("")
    with pytest.raises(WrongLibrary, match=r"imported onceflow from .*, not from this tree") as err:
        check_library(tmp_path)
    assert err.value.exit_code not in (0, 2) and str(tmp_path / "src") in str(err.value)
    check_library(Path(onceflow.__file__).parents[2])  # the tree it did come from
    check_library(tmp_path / "src")  # no onceflow sources there: nothing to compare


def test_stage_runner_records_start_and_end(tmp_path: Path) -> None:
    out = tmp_path / "outcomes.jsonl"
    code = (
        "import sys; from onceflow import stage; from onceflow.errors import ConfigError\n"
        "def main(argv):\n    raise ConfigError('params.yaml: train.epochs: must be > 0')\n"
        "sys.exit(stage.run(main))\n"
    )
    env = {OUTCOME_ENV: str(out), "DVC_STAGE": "train_supernet", "PATH": "/usr/bin:/bin"}
    env["PYTHONPATH"] = ":".join(sys.path)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "end"]
    assert records[1]["stage"] == "train_supernet" and records[1]["exit_code"] == 2
    assert type(classify("repro", records, "")) is BadInput


def test_overrides_go_through_dvc_and_typos_are_refused(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("# comment kept\ntrain:\n  epochs: 1\nlatency:\n  targets:\n    a: {}\n")
    set_params(tmp_path, ["train.epochs=4", "params.yaml:+latency.targets.a.work_pool=gpu"])
    text = params.read_text()
    assert "# comment kept" in text
    assert yaml.safe_load(text)["train"]["epochs"] == 4
    assert work_pools(read_targets(params)) == {"a": "gpu"}
    with pytest.raises(ConfigError, match="trian.epochs"):  # a typo is not silently added
        set_params(tmp_path, ["trian.epochs=2"])


def test_targets_must_be_a_mapping(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("latency:\n  targets: [a, b]\n")
    with pytest.raises(ConfigError, match="latency.targets must be a mapping"):
        read_targets(params)


def _write(root: Path, rel: str, doc: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_story_has_a_section_per_stage_that_ran(tmp_path: Path) -> None:
    assert "_No stage metrics yet._" in story_markdown(tmp_path, ["a"], "run")
    assert pareto_markdown(tmp_path) is None
    _write(tmp_path, "metrics/supernet.json", {"val_acc_max": 0.91, "val_acc_mid": 0.88,
                                               "val_acc_min": 0.8})  # fmt: skip
    _write(tmp_path, "metrics/latency/a.json", {"within_10pct": 0.9, "kendall_tau": 0.95,
                                                "mape": 0.04})  # fmt: skip
    _write(tmp_path, "metrics/predictor.json", {"model": "gbm", "kendall_tau": 0.71,
                                                "label_noise": {"tau_ceiling": 0.83}})  # fmt: skip
    # The package list lives in the details file beside the headline metrics.
    _write(tmp_path, "metrics/package/a.json", {"target": "a", "n_packages": 1})
    _write(tmp_path, "metrics/package/a.details.json", {"packages": [
        {"model_id": "r28-x", "budget_ms": 1.0, "predicted_accuracy": 0.86, "test_accuracy": 0.85,
         "predicted_latency_ms": 0.9, "latency_ms": 0.95}]})  # fmt: skip
    _write(tmp_path, "metrics/publish.json", {"registry": "s3://b/models", "packages": [
        {"target": "a", "model_id": "r28-x", "status": "published"}]})  # fmt: skip
    md = story_markdown(tmp_path, ["a"], "run at abc")
    assert "| max | 91.00% |" in md and "| a | 90.00% | 0.950 | 4.00% |" in md
    assert "| gbm | 0.710 | 0.830 |" in md
    assert "| a | `r28-x` | 1.000 | 86.00% | 85.00% | 0.900 | 0.950 | published |" in md
    assert "1 new of 1 packages in `s3://b/models`" in md
    assert picks(tmp_path, ["a"])[0].measured_latency_ms == 0.95
    _write(tmp_path, "plots/search/a.png", "png")
    assert "data:image/png;base64," in pareto_markdown(tmp_path)


def test_story_refuses_malformed_metrics_naming_file_and_key(tmp_path: Path) -> None:
    _write(tmp_path, "metrics/supernet.json", "{not json")
    with pytest.raises(DataError, match=r"metrics/supernet.json: not valid JSON"):
        story_markdown(tmp_path, [], "run")
    _write(tmp_path, "metrics/supernet.json", {"val_acc_max": "0.9"})
    with pytest.raises(DataError, match=r"supernet.json: val_acc_max is '0.9', expected a number"):
        story_markdown(tmp_path, [], "run")
    _write(tmp_path, "metrics/supernet.json", {})
    _write(tmp_path, "metrics/package/a.json", {"packages": [{"model_id": "m", "latency_ms": "1"}]})
    with pytest.raises(DataError, match=r"package/a.json: packages\[\].latency_ms is '1'"):
        picks(tmp_path, ["a"])


def test_serve_uses_its_own_deployment_names(tmp_path: Path) -> None:
    from flows.deploy import declared, served
    from flows.nas_pipeline import target_deployment

    params = tmp_path / "params.yaml"
    params.write_text("latency:\n  targets:\n    a: {work_pool: gpu}\n    b: {}\n")
    deps = served("0 3 * * 1", params)
    names = {(d.flow_name, d.name) for d in deps}
    assert names == {("nas-pipeline", "served"), ("nas-target-stages", "gpu-served")}
    assert not {d.name for d in deps} & {d["name"] for d in declared()}  # prefect.yaml's names
    suffix = deps[0].parameters["target_deployment_suffix"]
    assert target_deployment("gpu", suffix) == "nas-target-stages/gpu-served"
