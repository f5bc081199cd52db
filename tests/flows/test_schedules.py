"""A schedule fires on the real server by itself: nobody triggers the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.flows.conftest import REPO_ROOT, runs
from tests.flows.toy import write_toy_repo

pytestmark = pytest.mark.slow(seconds=23)  # about the module's test time on CI

INTERVAL_S = 10
_SERVE = """
import sys
from datetime import timedelta
from flows.nas_pipeline import nas_pipeline
nas_pipeline.serve(name="every-10s", interval=timedelta(seconds=int(sys.argv[2])),
                   parameters={"repo": sys.argv[1], "push": False})
"""


def test_interval_schedule_fires_by_itself_and_the_run_completes(
    prefect_server: str, tmp_path: Path, runlog: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    toy = write_toy_repo(tmp_path / "toy", {"ort-cpu": {}})
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONPATH": f"{REPO_ROOT}/src:{REPO_ROOT}",
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(toy), str(INTERVAL_S)], cwd=REPO_ROOT, env=env,
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        with (
            temporary_settings({PREFECT_API_URL: prefect_server}),
            get_client(sync_client=True) as client,
        ):
            deadline = time.monotonic() + 120
            deployment = None
            while deployment is None and time.monotonic() < deadline:
                try:
                    deployment = client.read_deployment_by_name("nas-pipeline/every-10s")
                except ObjectNotFound:
                    time.sleep(0.5)
            assert deployment is not None, log.read_text()[-3000:]
            schedule = deployment.schedules[0].schedule
            assert schedule.interval == timedelta(seconds=INTERVAL_S)
            flt = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
            done = []
            deadline = time.monotonic() + 400
            while not done and time.monotonic() < deadline:
                flow_runs = client.read_flow_runs(deployment_filter=flt)
                done = [r for r in flow_runs if r.state is not None and r.state.is_completed()]
                time.sleep(1)
            assert done, f"no scheduled run completed\n{log.read_text()[-3000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    run = done[0]
    # The scheduler made it (nobody called run_deployment), on the interval's grid.
    assert run.auto_scheduled and run.state.is_completed()
    offset = (run.expected_start_time - schedule.anchor_date).total_seconds()
    assert offset % INTERVAL_S == pytest.approx(0, abs=1e-6), offset
    assert "train_supernet main" in runs(runlog)
