"""The nas-pipeline flow end to end on the toy DVC pipeline, under Prefect's test harness."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import boto3
import pytest
import yaml

from onceflow.orchestration.dvc import dvc_env, set_params
from tests.flows.conftest import BUCKET, add_s3_remote, runs
from tests.flows.toy import commit, write_toy_repo

pytestmark = pytest.mark.slow(seconds=45)  # about the module's test time on CI

STAGES = ["prepare", "train_supernet", "predictor", "publish"] + [
    f"{s}@{t}" for s in ("latency_table", "search", "package") for t in ("ort-cpu", "edge")
]


def artifact(key: str, flow_run_id: UUID) -> str:
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


def lock_of(flow_run_id: UUID) -> dict:
    """The run's dvc.lock, from its `dvc-lock` artifact."""
    md = artifact("dvc-lock", flow_run_id)
    return yaml.safe_load(md.split("```yaml\n", 1)[1].rsplit("```", 1)[0])["stages"]


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


def _checkout_state(repo: Path) -> tuple[bytes, bytes, str]:
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return (repo / "params.yaml").read_bytes(), (repo / "dvc.yaml").read_bytes(), status


def test_flow_runs_in_its_own_workspace_and_results_come_back_through_dvc(
    harness: None, toy_repo: Path, runlog: Path, s3_endpoint: str
) -> None:
    from flows.nas_pipeline import nas_pipeline

    add_s3_remote(toy_repo, s3_endpoint, "e2e")
    commit(toy_repo, "remote")
    before = _checkout_state(toy_repo)
    state = nas_pipeline(repo=str(toy_repo), set_params=["train.epochs=3"], return_state=True)
    assert state.is_completed(), state.message
    run_id = state.state_details.flow_run_id

    assert sorted(r.split()[0] for r in runs(runlog)) == sorted(STAGES)  # each once
    # The user's checkout is untouched; the run's own dvc.lock records its override.
    assert _checkout_state(toy_repo) == before
    assert not (toy_repo / "models").exists()  # outputs live in the shared DVC cache
    assert lock_of(run_id)["train_supernet"]["params"]["params.yaml"]["train"]["epochs"] == 3
    # Outputs and run cache pushed to the remote.
    objs = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=BUCKET, Prefix="e2e/"
    )
    keys = [o["Key"] for o in objs.get("Contents", [])]
    assert any("/runs/" in k for k in keys) and len(keys) >= len(STAGES)
    # The run's story: every stage's key metrics, the picks, the Pareto plots.
    story = artifact("run-story", run_id)
    assert "train.epochs=3" in story and "| max | 90.00% |" in story
    assert "| edge | `toy-edge-0` | 2.000 | 91.00% | 90.00% | 1.400 | 1.500 | published |" in story
    assert "data:image/png;base64," in artifact("pareto-fronts", run_id)
    assert {p["target"] for p in state.result()["picks"]} == {"ort-cpu", "edge"}

    # Results came back through DVC: another run with the same inputs recomputes nothing...
    again = nas_pipeline(repo=str(toy_repo), set_params=["train.epochs=3"], push=False)
    assert again["commit"] == state.result()["commit"]
    assert len(runs(runlog)) == len(STAGES)
    # ... and `dvc repro` in the user's checkout, with those params, restores them.
    set_params(toy_repo, ["train.epochs=3"])
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=toy_repo, env=dvc_env(),
                   check=True, capture_output=True)  # fmt: skip
    assert len(runs(runlog)) == len(STAGES)
    assert (toy_repo / "models/supernet/w.json").read_text() == '{"epochs": 3}'


def test_bad_input_is_not_retried_a_killed_stage_is_and_a_rerun_resumes(
    harness: None, toy_repo: Path, runlog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.nas_pipeline import nas_pipeline

    monkeypatch.setenv("TOY_FAIL_STAGE", "search@edge:2")  # bad input: exit code 2
    state = nas_pipeline(repo=str(toy_repo), return_state=True)
    assert state.is_failed()
    msg = "ERROR toy: search@edge cannot meet its latency budget"
    assert "rejected its input" in state.message and msg in state.message
    assert any(msg in m for m in _logs(state.state_details.flow_run_id, msg))
    first = [r.split()[0] for r in runs(runlog)]
    assert first.count("search@edge") == 1 and "publish" not in first  # not retried

    monkeypatch.delenv("TOY_FAIL_STAGE")  # "fix" the input
    monkeypatch.setenv("TOY_KILL_ONCE", "package@ort-cpu")  # a lost process: retried
    state = nas_pipeline(repo=str(toy_repo), return_state=True)
    assert state.is_completed(), state.message
    second = [r.split()[0] for r in runs(runlog)][len(first) :]
    finished = set(first) - {"search@edge"}
    assert not set(second) & finished  # nothing that had finished ran again
    assert second.count("package@ort-cpu") == 2 and second.count("publish") == 1


def test_pool_without_deployment_fails_before_any_stage(
    harness: None, tmp_path: Path, runlog: Path, s3_endpoint: str
) -> None:
    from flows.nas_pipeline import nas_pipeline

    repo = write_toy_repo(tmp_path / "repo", {"edge": {"work_pool": "jetson"}})
    add_s3_remote(repo, s3_endpoint, "nodeploy")
    commit(repo, "remote")
    state = nas_pipeline(repo=str(repo), return_state=True)
    assert state.is_failed()
    assert (
        "target 'edge': work pool 'jetson' has no deployment 'nas-target-stages/jetson';"
        " create it with `prefect deploy --name nas-target-stages/jetson`" in state.message
    )
    assert runs(runlog) == []


def test_unreachable_remote_is_retried_then_one_line_names_it(
    harness: None, toy_repo: Path, runlog: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc push` to a DVC remote whose S3 endpoint is down: transient, retried with backoff,
    then the run fails with one line naming the remote and its endpoint."""
    import socket

    from flows.nas_pipeline import nas_pipeline

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    add_s3_remote(toy_repo, f"http://127.0.0.1:{port}", "down")
    commit(toy_repo, "remote that is down")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries: ours are under test
    state = nas_pipeline(repo=str(toy_repo), return_state=True)
    assert state.is_failed()
    first = state.message.split(": ", 1)[1].splitlines()
    assert len(first) == 1, state.message
    assert f"DVC remote 's3' at http://127.0.0.1:{port} (s3://{BUCKET}/down)" in first[0]
    assert "Could not connect to the endpoint URL" in first[0]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flt = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        tasks = client.read_task_runs(flow_run_filter=flt)
    push = [t for t in tasks if t.name.startswith("dvc push")]
    assert push and push[0].run_count == 3  # the first try and two retries, with backoff
