"""Unit tests of the orchestration helpers: planning from DVC's graph, `-S` overrides, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from onceflow.errors import ConfigError
from onceflow.orchestration import (
    StageFailed,
    make_plan,
    models_markdown,
    pareto_markdown,
    published_models,
    read_plan,
    run_dvc,
    set_params,
    work_pools,
)
from onceflow.orchestration.graph import read_targets

# The real pipeline's shape: predictor is global but parallel to the per-target latency tables.
STAGES = ["prepare", "train_supernet", "latency_table@a", "latency_table@b", "predictor",
          "search@a", "search@b", "package@a", "package@b", "publish"]  # fmt: skip
UPSTREAM = {
    "train_supernet": ["prepare"],
    "latency_table@a": ["train_supernet"],
    "latency_table@b": ["train_supernet"],
    "predictor": ["train_supernet"],
    "search@a": ["predictor", "latency_table@a"],
    "search@b": ["predictor", "latency_table@b"],
    "package@a": ["search@a", "train_supernet"],
    "package@b": ["search@b", "train_supernet"],
    "publish": ["package@a", "package@b"],
}


def test_plan_splits_graph_into_global_per_target_and_final_phases() -> None:
    plan = make_plan(STAGES, UPSTREAM, ["a", "b"])
    assert plan.pre == ("prepare", "train_supernet", "predictor")
    assert plan.targets == {
        "a": ("latency_table@a", "search@a", "package@a"),
        "b": ("latency_table@b", "search@b", "package@b"),
    }
    assert plan.post == ("publish",)
    assert plan.inputs_of("b") == ("train_supernet", "predictor")
    # Every stage comes after everything it reads.
    order = {s: i for i, s in enumerate(plan.stages)}
    assert all(order[u] < order[s] for s, ups in UPSTREAM.items() for u in ups)


def test_plan_rejects_cycles_and_cross_target_dependencies() -> None:
    with pytest.raises(ConfigError, match="cycle"):
        make_plan(["x", "y"], {"x": ["y"], "y": ["x"]}, [])
    bad = {**UPSTREAM, "search@b": ["predictor", "latency_table@a"]}
    with pytest.raises(ConfigError, match="search@b"):
        make_plan(STAGES, bad, ["a", "b"])


def test_work_pools_from_params(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("latency:\n  targets:\n    ort-cpu: {}\n    trt: {work_pool: gpu}\n")
    assert work_pools(read_targets(p)) == {"trt": "gpu"}
    p.write_text("latency:\n  targets: [a, b]\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_targets(p)


@pytest.mark.slow
def test_read_plan_follows_dvc_graph_and_overrides_go_through_dvc(toy_repo: Path) -> None:
    plan = read_plan(toy_repo)
    assert plan.pre == ("prepare", "train_supernet", "predictor")
    assert set(plan.targets) == {"ort-cpu", "edge"}
    assert plan.targets["edge"] == ("latency_table@edge", "search@edge", "package@edge")
    assert plan.post == ("publish",)

    set_params(toy_repo, ["train.epochs=4", "params.yaml:latency.targets.edge.backend=tensorrt"])
    params = yaml.safe_load((toy_repo / "params.yaml").read_text())
    assert params["train"]["epochs"] == 4
    assert params["latency"]["targets"]["edge"]["backend"] == "tensorrt"
    with pytest.raises(ConfigError, match="trian.epochs"):  # a typo is not silently added
        set_params(toy_repo, ["trian.epochs=2"])
    with pytest.raises(StageFailed, match="no_such_stage"):
        run_dvc(toy_repo, ["repro", "--single-item", "no_such_stage"], on_line=lambda _: None)


def test_report_lists_published_models_with_registry_uris(tmp_path: Path) -> None:
    assert models_markdown(published_models(tmp_path)).endswith("_No packaged models yet._\n")
    assert pareto_markdown(tmp_path) is None
    pkg = tmp_path / "artifacts" / "ort-cpu" / "r28-abc"
    pkg.mkdir(parents=True)
    manifest = {"target": "ort-cpu", "model_id": "r28-abc", "test_accuracy": 0.8123,
                "latency_ms": {"measured": 0.4567}}  # fmt: skip
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    models = published_models(tmp_path)
    assert models[0].uri == "" and models[0].latency_ms == pytest.approx(0.4567)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "publish.json").write_text(json.dumps({
        "registry": "s3://bucket/models",
        "packages": [{"target": "ort-cpu", "model_id": "r28-abc", "status": "published"}],
    }))  # fmt: skip
    md = models_markdown(published_models(tmp_path))
    assert "| ort-cpu | `r28-abc` | 81.23% | 0.457 | s3://bucket/models/ort-cpu/r28-abc |" in md
    (tmp_path / "plots" / "search").mkdir(parents=True)
    (tmp_path / "plots" / "search" / "ort-cpu.png").write_bytes(b"\x89PNG fake")
    assert "## ort-cpu" in pareto_markdown(tmp_path)


@pytest.mark.slow
def test_dvc_session_runs_commands_in_one_process_with_current_env(
    toy_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onceflow.orchestration import close_sessions, repro_stage
    from onceflow.orchestration.dvc import _SESSIONS

    lines: list[str] = []
    monkeypatch.setenv("TOY_FAIL_STAGE", "prepare")
    with pytest.raises(StageFailed, match="ERROR toy: prepare cannot meet its latency budget"):
        repro_stage(toy_repo, "prepare", on_line=lines.append)
    assert any("ERROR toy: prepare" in ln for ln in lines)  # streamed as it ran
    pid = _SESSIONS[str(toy_repo)].proc.pid
    monkeypatch.delenv("TOY_FAIL_STAGE")  # each command sees the caller's environment
    assert repro_stage(toy_repo, "prepare", on_line=lines.append) is True
    assert repro_stage(toy_repo, "prepare", on_line=lines.append) is False  # unchanged: skipped
    assert _SESSIONS[str(toy_repo)].proc.pid == pid
    close_sessions()
    assert not _SESSIONS
