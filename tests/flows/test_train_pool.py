"""The `train` work pool: the weekly pipeline trains the supernet on the training machine's
worker and measures here; the weights come back through the DVC remote's run cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import REPO_ROOT, add_s3_remote, runs
from tests.flows.test_deployments import _env, _wait_final, worker
from tests.flows.test_nas_pipeline import lock_of
from tests.flows.toy import commit, write_toy_repo
from tests.support.workspace import copy_project

pytestmark = pytest.mark.slow(seconds=81)  # test time on CI: the longest start first


def test_pipeline_trains_on_the_train_pool_and_measures_here(
    prefect_server: str, s3_endpoint: str, tmp_path: Path, runlog: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    clone = copy_project(REPO_ROOT, tmp_path / "clone")
    py = [sys.executable, "-m"]
    env = _env(clone, tmp_path / "home", prefect_server)
    subprocess.run([*py, "flows.deploy", "pools"], cwd=clone, env=env, check=True)
    for name in ("weekly", "train"):
        proc = subprocess.run([*py, "prefect", "--no-prompt", "deploy", "--name", name],
                              cwd=clone, env=env, capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    toy = write_toy_repo(tmp_path / "toy", {"ort-cpu": {}})
    add_s3_remote(toy, s3_endpoint, "train-pool")
    commit(toy, "remote")
    trainbox = tmp_path / "trainbox-checkout"  # the training machine's clone, its own cache
    subprocess.run(["git", "clone", "-q", str(toy), str(trainbox)], check=True)

    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as c:
        train = c.read_deployment_by_name("nas-train-stage/train")
        assert train.work_pool_name == "train"
        c.update_deployment(train.id, DeploymentUpdate(parameters={"repo": str(trainbox)}))
        logs = tmp_path / "logs"
        logs.mkdir()
        main_env = _env(clone, tmp_path / "w-cpu", prefect_server, TOY_WORKER="main",
                        ONCEFLOW_CACHE_DIR=str(tmp_path / "cache-main"))  # fmt: skip
        train_env = _env(clone, tmp_path / "w-train", prefect_server, TOY_WORKER="trainbox",
                         ONCEFLOW_CACHE_DIR=str(tmp_path / "cache-trainbox"))  # fmt: skip
        with (
            worker("cpu", clone, main_env, logs / "cpu.log"),
            worker("train", clone, train_env, logs / "train.log"),
        ):
            params = {"repo": str(toy), "train_pool": "train", "poll_seconds": 1}
            run = run_deployment("nas-pipeline/weekly", parameters=params, timeout=0)
            (done,) = _wait_final(c, [run.id], timeout=400)
        worker_logs = "".join(p.read_text() for p in logs.iterdir())
        assert done.state.is_completed(), f"{done.state.message}\n{worker_logs[-4000:]}"
        lock = lock_of(run.id)

    where = dict(line.split() for line in runs(runlog))
    assert where.pop("train_supernet") == "trainbox"  # trained on the training machine only
    assert set(where.values()) == {"main"} and "latency_table@ort-cpu" in where
    # The run's dvc.lock records the weights the training machine made.
    assert "models/supernet" in {o["path"] for o in lock["train_supernet"]["outs"]}
    assert not (trainbox / "models").exists()  # it worked in a workspace, not its checkout
