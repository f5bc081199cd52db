"""The nas-pipeline flow over the project's real dvc.yaml on tiny params, publishing into a moto
S3 registry, then `onceflow pull` of the result (under Prefect's test harness)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.flows.conftest import BUCKET, REPO_ROOT, add_s3_remote
from tests.flows.test_nas_pipeline import artifact
from tests.flows.toy import commit
from tests.support.workspace import TINY_PARAMS, copy_project

pytestmark = pytest.mark.slow


def test_real_pipeline_publishes_to_s3_registry_and_pulls(
    harness: None, tmp_path: Path, s3_endpoint: str
) -> None:
    from flows.nas_pipeline import nas_pipeline

    repo = copy_project(REPO_ROOT, tmp_path / "repo", TINY_PARAMS)
    add_s3_remote(repo, s3_endpoint, "real-e2e")
    commit(repo, "remote")
    registry = f"s3://{BUCKET}/models-e2e"
    overrides = [f"publish.uri={registry}", f"publish.endpoint_url={s3_endpoint}"]
    state = nas_pipeline(repo=str(repo), set_params=overrides, return_state=True)
    assert state.is_completed(), state.message
    models = state.result()["picks"]
    assert models and all(m["published"] in {"published", "unchanged"} for m in models)
    # The story reads the real stages' metrics strictly: every section is there.
    story = artifact("run-story", state.state_details.flow_run_id)
    for section in (
        "## Supernet",
        "## Latency tables",
        "## Accuracy predictor",
        "## Picks",
        f"## Published\n\n{len(models)} new of {len(models)} packages in `{registry}`",
    ):
        assert section in story, section  # fmt: skip
    pushed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=BUCKET, Prefix="real-e2e/"
    )
    assert pushed.get("KeyCount", 0) > 0  # `dvc push` at the end

    dest = tmp_path / "pulled"
    env = {**os.environ, "AWS_ENDPOINT_URL": s3_endpoint}
    cli = Path(sys.executable).parent / "onceflow"
    proc = subprocess.run(
        [cli, "pull", "--registry", registry, "--target", "ort-cpu", "--max-latency-ms", "1e3",
         "--dest", dest],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["model_id"] in {m["model_id"] for m in models}
    assert (dest / "model.onnx").stat().st_size == manifest["files"]["model.onnx"]["size"]
