"""The nas-pipeline flow end to end on the toy DVC pipeline, under Prefect's test harness."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

import boto3
import pytest
import yaml

from onceflow.orchestration import read_plan
from tests.flows.conftest import BUCKET, add_s3_remote, runs

pytestmark = pytest.mark.slow


def _dvc_status(root: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status()


def _artifact(key: str, flow_run_id: UUID) -> str:
    """The data of the run's artifact ``key`` (the harness keeps other runs' artifacts too)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    flt = ArtifactFilter(
        key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
    )
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=flt)
    assert arts, f"no artifact {key} for flow run {flow_run_id}"
    return str(arts[0].data)


def _logs(flow_run_id: UUID, needle: str, timeout: float = 15) -> list[str]:
    """Messages of the run's logs; waits for `needle` (logs reach the API in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        messages = [log.message for log in logs]
        if any(needle in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def test_flow_runs_pipeline_with_overrides_artifacts_and_push(
    harness: None, toy_repo: Path, runlog: Path, s3_endpoint: str
) -> None:
    from flows.nas_pipeline import nas_pipeline

    add_s3_remote(toy_repo, s3_endpoint, "e2e")
    state = nas_pipeline(repo=str(toy_repo), set_params=["train.epochs=3"], return_state=True)
    assert state.is_completed(), state.message
    result = state.result()

    plan = read_plan(toy_repo)
    assert [r.split()[0] for r in runs(runlog)] == list(plan.stages)  # DVC order, each once
    assert result["ran"] == list(plan.stages)
    # The override went into params.yaml through DVC, and dvc.lock records what was used.
    assert yaml.safe_load((toy_repo / "params.yaml").read_text())["train"]["epochs"] == 3
    lock = yaml.safe_load((toy_repo / "dvc.lock").read_text())
    assert lock["stages"]["train_supernet"]["params"]["params.yaml"]["train"]["epochs"] == 3
    assert _dvc_status(toy_repo) == {}
    # Pushed to the remote at the end.
    objs = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=BUCKET, Prefix="e2e/"
    )
    assert objs.get("KeyCount", 0) >= len(plan.stages)
    # Artifacts for people: the models table with registry URIs, and the Pareto plots inlined.
    run_id = state.state_details.flow_run_id
    md = _artifact("published-models", run_id)
    assert "toy-edge-0" in md and "file://registry/edge/toy-edge-0" in md and "90.00%" in md
    assert "data:image/png;base64," in _artifact("pareto-fronts", run_id)
    assert {m["target"] for m in result["models"]} == {"ort-cpu", "edge"}

    # A second run with nothing changed recomputes nothing.
    again = nas_pipeline(repo=str(toy_repo), push=False)
    assert again["ran"] == []
    assert len(runs(runlog)) == len(plan.stages)


def test_failing_stage_fails_flow_with_its_message_and_rerun_continues(
    harness: None, toy_repo: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.nas_pipeline import nas_pipeline

    monkeypatch.setenv("TOY_FAIL_STAGE", "search@edge")
    state = nas_pipeline(repo=str(toy_repo), return_state=True)
    assert state.is_failed()
    msg = "ERROR toy: search@edge cannot meet its latency budget"
    assert msg in state.message
    assert any(msg in m for m in _logs(state.state_details.flow_run_id, msg))
    first = [r.split()[0] for r in runs(runlog)]
    assert first[-1] == "search@edge" and "publish" not in first

    monkeypatch.delenv("TOY_FAIL_STAGE")  # "fix" the stage
    state = nas_pipeline(repo=str(toy_repo), return_state=True)
    assert state.is_completed(), state.message
    second = [r.split()[0] for r in runs(runlog)][len(first) :]
    finished = first[:-1]
    assert not set(second) & set(finished)  # nothing that had finished ran again
    assert second == ["search@edge", "package@edge", "publish"]
    assert _dvc_status(toy_repo) == {}
