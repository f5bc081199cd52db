"""Deployments against a real `prefect server start`: the weekly nas-pipeline deployment run by a
process worker, with one target fanned out to a second worker on its own pool; the target's
artifacts come back through a DVC remote on moto S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from flows.deploy import WEEKLY, deploy
from onceflow.orchestration.toy import write_toy_repo
from tests.flows.conftest import REPO_ROOT, add_s3_remote, runs

pytestmark = pytest.mark.slow

CPU_POOL, EDGE_POOL = "cpu-test", "edge-test"


@contextmanager
def worker(pool: str, api_url: str, home: Path, name: str) -> Iterator[Path]:
    """`prefect worker start --pool <pool>` (process type) in the project checkout."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "TOY_WORKER": name,
    }
    log = home / "worker.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
             "process", "--name", f"{name}-worker"],
            cwd=REPO_ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield log
        finally:
            proc.send_signal(signal.SIGINT)  # a worker stops on SIGINT, not SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_final(client, flow_run_id, timeout: float):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout}s")


def test_scheduled_deployment_runs_on_worker_and_fans_out_target(
    prefect_server: str, s3_endpoint: str, tmp_path: Path, runlog: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    main = write_toy_repo(
        tmp_path / "main", {"ort-cpu": {"backend": "ort"}, "edge": {"work_pool": EDGE_POOL}}
    )
    add_s3_remote(main, s3_endpoint, "fanout")
    checkout = tmp_path / "edge-checkout"  # the edge machine's clone of the project
    shutil.copytree(main, checkout)

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        ids = deploy(
            source=REPO_ROOT,
            pipeline_pool=CPU_POOL,
            cron=WEEKLY,
            pools=[EDGE_POOL],
            pipeline_parameters={"repo": str(main), "poll_seconds": 1},
            target_parameters={EDGE_POOL: {"repo": str(checkout)}},
        )
        assert set(ids) == {"nas-pipeline/weekly", f"nas-target-stages/{EDGE_POOL}"}
        with get_client(sync_client=True) as client:
            dep = client.read_deployment(ids["nas-pipeline/weekly"])
            assert dep.work_pool_name == CPU_POOL
            assert [s.schedule.cron for s in dep.schedules] == [WEEKLY]
            target_dep = client.read_deployment(ids[f"nas-target-stages/{EDGE_POOL}"])
            assert target_dep.work_pool_name == EDGE_POOL
            # The server's scheduler puts the upcoming weekly runs on the calendar.
            deadline = time.monotonic() + 30
            scheduled = []
            while not scheduled and time.monotonic() < deadline:
                scheduled = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
                )
                time.sleep(0.5)
            assert scheduled and all(r.state.is_scheduled() for r in scheduled)

            with (
                worker(CPU_POOL, prefect_server, tmp_path / "w-cpu", "main") as cpu_log,
                worker(EDGE_POOL, prefect_server, tmp_path / "w-edge", "edge") as edge_log,
            ):
                run = run_deployment("nas-pipeline/weekly", timeout=0)
                final = _wait_final(client, run.id, timeout=240)
                logs = cpu_log.read_text() + edge_log.read_text()
            assert final.state.is_completed(), f"{final.state.message}\n{logs[-4000:]}"

    # The edge target's stages ran on the edge worker, everything else on the main one.
    where = dict(line.split() for line in runs(runlog))
    assert len(where) == len(runs(runlog))  # each stage ran once
    assert {s for s, w in where.items() if w == "edge"} == {
        "latency_table@edge", "search@edge", "package@edge"
    }  # fmt: skip
    assert where["publish"] == "main" and where["package@ort-cpu"] == "main"
    # ... and their outputs came back through the S3 remote, recorded by DVC in dvc.lock.
    assert json.loads((main / "latency/edge/lut.json").read_text())["worker"] == "edge"
    lock = yaml.safe_load((main / "dvc.lock").read_text())["stages"]
    assert {"latency_table@edge", "search@edge", "package@edge"} <= set(lock)
    publish = json.loads((main / "metrics/publish.json").read_text())
    assert {m["target"] for m in publish["packages"]} == {"ort-cpu", "edge"}
    from dvc.repo import Repo

    with Repo(str(main)) as repo:
        assert repo.status() == {}
