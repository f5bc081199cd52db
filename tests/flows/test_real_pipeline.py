"""The nas-pipeline flow over the project's real dvc.yaml on tiny params (under Prefect's test
harness): it runs the committed revision's library, not the checkout's uncommitted edits, and
its default `file://registry` lands in the user's checkout, where `onceflow pull` finds it."""

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

pytestmark = pytest.mark.slow(seconds=139)  # test time on CI: the longest start first


_IMPORT_LOG = """
import os as _os
if _os.environ.get("ONCEFLOW_TEST_IMPORT_LOG"):  # (test) which tree's library a process imports
    with open(_os.environ["ONCEFLOW_TEST_IMPORT_LOG"], "a") as _fh:
        _fh.write(__file__ + "\\n")
"""
_EDIT = """
if _os.environ.get("ONCEFLOW_TEST_EDIT_MARKER"):  # (test) an uncommitted edit's fingerprint
    open(_os.environ["ONCEFLOW_TEST_EDIT_MARKER"], "w").write("edited")
"""


def test_real_pipeline_runs_its_revision_and_publishes_where_the_user_pulls(
    harness: None,
    tmp_path: Path,
    s3_endpoint: str,
    host_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.nas_pipeline import nas_pipeline

    repo = copy_project(REPO_ROOT, tmp_path / "repo", TINY_PARAMS)
    init = repo / "src" / "onceflow" / "__init__.py"
    init.write_text(init.read_text() + _IMPORT_LOG)
    add_s3_remote(repo, s3_endpoint, "real-e2e")
    commit(repo, "remote")
    # An uncommitted edit in the checkout: the run must not execute it.
    init.write_text(init.read_text() + _EDIT)
    imports, marker = tmp_path / "imports.txt", tmp_path / "edited.txt"
    monkeypatch.setenv("ONCEFLOW_TEST_IMPORT_LOG", str(imports))
    monkeypatch.setenv("ONCEFLOW_TEST_EDIT_MARKER", str(marker))

    state = nas_pipeline(repo=str(repo), return_state=True)  # default params: file://registry
    assert state.is_completed(), state.message
    models = state.result()["picks"]
    assert models and all(m["published"] in {"published", "unchanged"} for m in models)
    # Every stage imported the library of the run's workspace (the commit), none the edit.
    workspace_inits = imports.read_text().splitlines()
    runs_dir = host_cache / "runs"
    assert workspace_inits and all(
        Path(p).is_relative_to(runs_dir) and p.endswith("/src/onceflow/__init__.py")
        for p in workspace_inits
    ), workspace_inits
    assert not marker.exists()
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    subprocess.run([sys.executable, "-c", "import onceflow"], env=env, check=True)
    assert marker.read_text() == "edited"  # the edit would have left its mark had it run

    # The story reads the real stages' metrics strictly: every section is there.
    registry = f"file://{repo.resolve() / 'registry'}"
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

    # The workspace is gone; the models stayed in the checkout's registry, where `pull` looks.
    dest = tmp_path / "pulled"
    cli = Path(sys.executable).parent / "onceflow"
    proc = subprocess.run(
        [cli, "pull", "--target", "ort-cpu", "--max-latency-ms", "1e3", "--dest", dest],
        cwd=repo / "src", capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["model_id"] in {m["model_id"] for m in models}
    assert (dest / "model.onnx").stat().st_size == manifest["files"]["model.onnx"]["size"]
    assert not list(runs_dir.glob("onceflow-run-*"))
