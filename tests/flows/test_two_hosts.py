"""Two machines, one pipeline: the real dvc.yaml on tiny params across two clones that share only
the Prefect server and the S3 server (SeaweedFS: the DVC remote and the model registry).

Host A runs the weekly deployment on its `cpu` pool worker and measures `ort-cpu`; host B runs the
`gpu` pool's worker, which takes the `ort-cpu-int8` target. Each host has its own clone, DVC cache,
onceflow cache and Prefect home. First B's machine dies in the middle of its latency table: the
run must fail (not hang, not succeed). With B back, a rerun completes, reusing what finished, and
a third, empty directory pulls a model from the S3 registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from tests.flows.conftest import REPO_ROOT, add_s3_remote
from tests.flows.test_nas_pipeline import lock_of
from tests.flows.toy import commit
from tests.support.s3server import BUCKET
from tests.support.workspace import TINY_PARAMS, copy_project, deep_merge

pytestmark = pytest.mark.slow(seconds=285)  # test time on CI: the longest start first

POOL_TARGET = "ort-cpu-int8"  # measured on host B (its `gpu` pool)
REGISTRY = f"s3://{BUCKET}/models-two-hosts"


def _host_env(clone: Path, root: Path, api_url: str, **extra: str) -> dict[str, str]:
    """A machine's shell in its clone: its own code first, its own Prefect home and caches."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(root / "prefect-home"),
        "ONCEFLOW_CACHE_DIR": str(root / "onceflow-cache"),
        "PYTHONPATH": f"{clone}/src:{clone}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        **extra,
    }
    return env


@contextmanager
def _worker(pool: str, clone: Path, env: dict[str, str], log: Path) -> Iterator[psutil.Process]:
    with open(log, "a") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
             "process", "--name", f"{pool}-{clone.name}"],
            cwd=clone, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield psutil.Process(proc.pid)
    finally:
        _kill_tree(proc.pid)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started: the machine is gone."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=30)


def _wait(pred, what: str, timeout: float = 600):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise TimeoutError(f"waited {timeout}s for: {what}")


def _final(client, run_id):  # noqa: ANN001, ANN202
    run = client.read_flow_run(run_id)
    return run if run.state is not None and run.state.is_final() else None


def _stage_log(client, run_ids) -> list[tuple[float, str, str]]:  # noqa: ANN001
    """(time, flow run name, line) of the DVC lines saying a stage ran or was restored."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    names = {i: client.read_flow_run(i).name for i in run_ids}
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(run_ids)))
    logs, offset = [], 0
    while page := client.read_logs(flt, limit=200, offset=offset):
        logs += page
        offset += len(page)
    keep = ("Running stage", "Restored stage", "didn't change", "is cached")
    rows = [(lg.timestamp.timestamp(), names.get(lg.flow_run_id, "?"), lg.message) for lg in logs]
    return sorted(r for r in rows if any(k in r[2] for k in keep))


def _remote_bytes(s3_server, prefix: str) -> int:  # noqa: ANN001
    pages = (
        s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    )
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def _cache_has(cache: Path, md5: str) -> bool:
    h = md5.removesuffix(".dir")
    return any((cache / "files" / "md5" / h[:2]).glob(f"{h[2:]}*"))


def test_two_hosts_share_only_the_servers_survive_a_lost_machine_and_publish_to_s3(
    prefect_server: str,
    s3_endpoint: str,
    s3_server,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    params = deep_merge(json.loads(json.dumps(TINY_PARAMS)), {
        "latency": {"targets": {POOL_TARGET: {"work_pool": "gpu"}}},
        "publish": {"uri": REGISTRY, "endpoint_url": s3_endpoint},
    })  # fmt: skip
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    a = copy_project(REPO_ROOT, host_a / "onceflow", params)
    add_s3_remote(a, s3_endpoint, "remote-two-hosts")
    commit(a, "remote")
    b = host_b / "onceflow"
    subprocess.run(["git", "clone", "-q", str(a), str(b)], check=True)
    env_a = _host_env(a, host_a, prefect_server)
    env_b = _host_env(b, host_b, prefect_server)
    py = [sys.executable, "-m"]
    subprocess.run([*py, "flows.deploy", "pools"], cwd=a, env=env_a, check=True)
    for clone, env, name in ((a, env_a, "weekly"), (b, env_b, "gpu")):  # each machine its own
        proc = subprocess.run([*py, "prefect", "--no-prompt", "deploy", "--name", name],
                              cwd=clone, env=env, capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cache_b = b / ".dvc" / "cache"
    assert not cache_b.exists()  # B starts with nothing: whatever it reads must come from S3
    remote_before = _remote_bytes(s3_server, "remote-two-hosts/")
    logs = tmp_path / "logs"
    logs.mkdir()
    flow_params = {"poll_seconds": 1, "worker_lost_after_s": 10}
    timing_lock = Path(env_a.get("ONCEFLOW_TIMING_LOCK", "/tmp/onceflow-timing.lock"))

    with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as c:
        # 1. B's machine dies while it times its table: the run fails, it does not hang.
        with (
            _worker("cpu", a, env_a, logs / "a.log"),
            _worker("gpu", b, env_b, logs / "b.log") as wb,
        ):
            first = run_deployment("nas-pipeline/weekly", parameters=flow_params, timeout=0)
            _wait(lambda: f"latency_table@{POOL_TARGET}" in _holder(timing_lock)
                  and _worker_descendant_runs(wb, "stages.latency_table"),
                  "host B timing its latency table")  # fmt: skip
            _kill_tree(wb.pid)
            run1 = _wait(lambda: _final(c, first.id), "the first run to end", 900)
        assert run1.state.is_failed(), (run1.state.name, run1.state.message)
        assert "no live worker on work pool 'gpu'" in (run1.state.message or "")
        dead = list((host_b / "onceflow-cache" / "runs").glob("onceflow-run-*"))
        assert [p for p in dead if p.is_dir()], "B's killed run left its workspace"

        # 2. B is back: the rerun completes and reuses what had finished.
        with _worker("cpu", a, env_a, logs / "a.log"), _worker("gpu", b, env_b, logs / "b.log"):
            second = run_deployment("nas-pipeline/weekly", parameters=flow_params, timeout=0)
            run2 = _wait(lambda: _final(c, second.id), "the second run to end", 900)
        worker_logs = "".join(p.read_text() for p in logs.iterdir())
        assert run2.state.is_completed(), f"{run2.state.message}\n{worker_logs[-4000:]}"
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=a, capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        target_runs = [  # this test's target runs (the server is shared by the session)
            r for r in c.read_flow_runs() if r.flow_id != run2.flow_id
            and r.parameters.get("commit") == sha
        ]  # fmt: skip
        rows = _stage_log(c, [first.id, second.id, *(r.id for r in target_runs)])
        lock = lock_of(second.id)
        second_logs = _messages(c, second.id)

    # Where each stage ran: training on A, the pool target's stages on B only.
    ran = [(who, line) for _, who, line in rows if "Running stage" in line]
    on_b = {line.split("'")[1] for who, line in ran if who in {r.name for r in target_runs}}
    stages_b = ("device_results", "latency_table", "search", "package")
    assert on_b == {f"{s}@{POOL_TARGET}" for s in stages_b}
    # The rerun trained nothing again: A's supernet came back from its own cache.
    second_name = run2.name
    assert not [ln for who, ln in ran if who == second_name and "train_supernet" in ln]
    # B's dead workspace is gone (its next run removed it); no workspace keeps credentials.
    assert not any(p.exists() for p in dead)
    # B got the supernet only from the remote: its own cache holds it, its clone never had it.
    supernet_md5 = next(
        o["md5"] for o in lock["train_supernet"]["outs"] if o["path"] == "models/supernet"
    )
    assert _cache_has(cache_b, supernet_md5) and not (b / "models").exists()
    # A, where the run ends, holds every stage's result: `dvc status` was clean there.
    assert [ln for ln in second_logs if ln.startswith("dvc status: clean")], second_logs[-20:]
    # A third, empty directory pulls a model by budget from the S3 registry.
    dest = tmp_path / "user" / "model"
    dest.parent.mkdir()
    cli = Path(sys.executable).parent / "onceflow"
    proc = subprocess.run(
        [cli, "pull", "--registry", REGISTRY, "--endpoint-url", s3_endpoint, "--target",
         POOL_TARGET, "--max-latency-ms", "1e3", "--dest", dest],
        cwd=dest.parent, env={**os.environ}, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["target"] == POOL_TARGET and (dest / "model.onnx").is_file()

    timeline = [
        {"t_s": round(t - rows[0][0], 1), "flow_run": who, "line": line} for t, who, line in rows
    ]
    pushed = _remote_bytes(s3_server, "remote-two-hosts/") - remote_before
    pulled_by_b = sum(f.stat().st_size for f in cache_b.rglob("*") if f.is_file())
    report = {"timeline": timeline, "remote_bytes_pushed": pushed,
              "host_b_cache_bytes": pulled_by_b}  # fmt: skip
    if os.environ.get("ONCEFLOW_TEST_REPORT_DIR"):  # the figures for a person to read
        Path(os.environ["ONCEFLOW_TEST_REPORT_DIR"], "two_hosts.json").write_text(
            json.dumps(report, indent=1)
        )


def _holder(lock: Path) -> str:
    try:
        return lock.read_text()
    except OSError:
        return ""


def _worker_descendant_runs(worker: psutil.Process, needle: str) -> bool:
    try:
        return any(needle in " ".join(p.cmdline()) for p in worker.children(recursive=True))
    except psutil.Error:
        return False


def _messages(client, run_id) -> list[str]:  # noqa: ANN001
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [lg.message for lg in logs]
