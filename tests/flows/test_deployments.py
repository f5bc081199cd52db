"""Deployments against a real `prefect server start`: `prefect deploy --all` from a fresh clone,
then two overlapping runs of the weekly deployment with different overrides, each fanning its
edge target out to the `gpu` pool's worker (pool limit 1: the two target runs queue)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import REPO_ROOT, add_s3_remote, runs
from tests.flows.test_nas_pipeline import lock_of
from tests.flows.toy import commit, write_toy_repo
from tests.support.workspace import copy_project

pytestmark = pytest.mark.slow(seconds=160)  # test time on CI: the longest start first


def _env(clone: Path, home: Path, api_url: str | None, **extra: str) -> dict[str, str]:
    """A shell in the clone: its own code on the path, its own Prefect home."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONPATH": f"{clone}/src:{clone}", **extra}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


@contextmanager
def worker(pool: str, clone: Path, env: dict[str, str], log: Path) -> Iterator[Path]:
    """`prefect worker start --pool <pool>` (process type) in the clone."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
             "process", "--name", f"{pool}-worker"],
            cwd=clone, env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            yield log
        finally:
            proc.send_signal(signal.SIGINT)  # a worker stops on SIGINT, not SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_final(client, ids, timeout: float) -> list:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [client.read_flow_run(i) for i in ids]
        if all(r.state is not None and r.state.is_final() for r in done):
            return done
        time.sleep(1)
    raise TimeoutError(f"flow runs {ids} not finished after {timeout}s")


def test_deploy_all_from_fresh_clone_then_overlapping_runs_keep_their_own_params(
    prefect_server: str, s3_endpoint: str, tmp_path: Path, runlog: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    clone = copy_project(REPO_ROOT, tmp_path / "clone")  # the tracked files, freshly committed
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    py = [sys.executable, "-m"]

    # Without an API server: one line saying how to point at one, no temporary server.
    no_api = _env(clone, tmp_path / "home-noapi", None)
    proc = subprocess.run([*py, "flows.deploy", "pools"], cwd=clone, env=no_api,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "PREFECT_API_URL" in proc.stderr
    proc = subprocess.run([*py, "prefect", "--no-prompt", "deploy", "--all"], cwd=clone,
                          env=no_api, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode != 0 and "PREFECT_API_URL" in proc.stdout + proc.stderr
    down = _env(clone, tmp_path / "home-down", "http://127.0.0.1:9/api")  # nothing listens
    proc = subprocess.run([*py, "flows.deploy", "all"], cwd=clone, env=down,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot reach the Prefect API at http://127.0.0.1:9/api" in proc.stderr

    # With one: the pools, then every deployment prefect.yaml declares.
    env = _env(clone, tmp_path / "home", prefect_server)
    subprocess.run([*py, "flows.deploy", "pools"], cwd=clone, env=env, check=True)
    proc = subprocess.run([*py, "prefect", "--no-prompt", "deploy", "--all"], cwd=clone, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    toy = write_toy_repo(tmp_path / "toy", {"ort-cpu": {}, "edge": {"work_pool": "gpu"}})
    add_s3_remote(toy, s3_endpoint, "overlap")
    commit(toy, "remote")
    edge = tmp_path / "edge-checkout"  # the GPU machine's clone of the project
    subprocess.run(["git", "clone", "-q", str(toy), str(edge)], check=True)
    before = (toy / "params.yaml").read_bytes()

    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as c:
        weekly = c.read_deployment_by_name("nas-pipeline/weekly")
        gpu = c.read_deployment_by_name("nas-target-stages/gpu")
        declared = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"][0]
        assert [(s.schedule.cron, s.schedule.timezone) for s in weekly.schedules] == [
            (declared["schedules"][0]["cron"], "UTC")
        ]
        assert weekly.version == gpu.version == sha
        assert set(weekly.tags) == {"onceflow", "pipeline"} and "gpu" in gpu.tags
        assert (weekly.work_pool_name, gpu.work_pool_name) == ("cpu", "gpu")
        for dep in (weekly, gpu):
            assert dep.global_concurrency_limit.limit == 1
        assert c.read_work_pool("gpu").concurrency_limit == 1
        # The scheduler puts the weekly runs on the calendar.
        flt = DeploymentFilter(id=DeploymentFilterId(any_=[weekly.id]))
        deadline = time.monotonic() + 30

        def calendar() -> list:  # the scheduler's runs (other tests may run this deployment)
            return [r for r in c.read_flow_runs(deployment_filter=flt) if r.auto_scheduled]

        while not calendar() and time.monotonic() < deadline:
            time.sleep(0.5)
        weekly_runs = calendar()
        assert weekly_runs, "the scheduler put no weekly run on the calendar"
        for r in weekly_runs:  # Mondays 03:00 UTC, in the future, waiting
            when = r.expected_start_time.astimezone(UTC)
            assert r.state.is_scheduled()
            assert (when.weekday(), when.hour, when.minute, when.second) == (0, 3, 0, 0), when
            assert when > datetime.now(UTC)

        # Let two pipeline runs overlap on the CPU machine; the GPU pool stays at 1.
        c.update_work_pool("cpu", WorkPoolUpdate(concurrency_limit=2))
        c.update_deployment(weekly.id, DeploymentUpdate(concurrency_limit=2))
        c.update_deployment(gpu.id, DeploymentUpdate(parameters={"repo": str(edge)}))
        logs = tmp_path / "logs"
        logs.mkdir()
        cpu_env = _env(clone, tmp_path / "w-cpu", prefect_server, TOY_WORKER="main")
        gpu_env = _env(clone, tmp_path / "w-gpu", prefect_server, TOY_WORKER="edge")
        with (
            worker("cpu", clone, cpu_env, logs / "cpu.log"),
            worker("gpu", clone, gpu_env, logs / "gpu.log"),
        ):
            ids = []
            for epochs in (2, 5):
                params = {"repo": str(toy), "set_params": [f"train.epochs={epochs}"],
                          "poll_seconds": 1}  # fmt: skip
                ids.append(run_deployment("nas-pipeline/weekly", parameters=params, timeout=0).id)
                time.sleep(1)
            a, b = _wait_final(c, ids, timeout=400)
        worker_logs = "".join(p.read_text() for p in logs.iterdir())
        for run in (a, b):
            assert run.state.is_completed(), f"{run.state.message}\n{worker_logs[-4000:]}"
        toy_head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=toy, check=True,
                                  capture_output=True, text=True).stdout.strip()  # fmt: skip
        target_runs = [  # this test's (the session's server keeps other tests' runs)
            r
            for r in c.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[gpu.id]))
            )
            if r.parameters.get("commit") == toy_head
        ]
        # Each run recorded its own params in its own dvc.lock.
        for run, epochs in ((a, 2), (b, 5)):
            assert lock_of(run.id)["train_supernet"]["params"]["params.yaml"]["train"] == {
                "epochs": epochs
            }

    assert (toy / "params.yaml").read_bytes() == before  # the user's checkout: byte-identical
    assert a.start_time < b.end_time and b.start_time < a.end_time  # they did overlap
    # The two edge-target runs queued on the GPU pool (limit 1): one after the other.
    assert len(target_runs) == 2 and all(r.state.is_completed() for r in target_runs)
    first, second = sorted(target_runs, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time
    # The edge stages ran on the GPU worker only (DVC restored what did not change the second
    # time), the rest on the CPU one; each run trained its own supernet.
    where = [line.split() for line in runs(runlog)]
    on_edge = [s for s, w in where if w == "edge"]
    assert set(on_edge) == {f"{s}@edge" for s in ("latency_table", "search", "package")}
    assert on_edge.count("latency_table@edge") == 2
    assert not [s for s, w in where if w != "edge" and s.endswith("@edge")]
    assert [s for s, _ in where].count("train_supernet") == 2
