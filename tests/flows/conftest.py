"""Fixtures for the flow tests: a quiet Prefect home, the test harness, a real Prefect server,
the real S3 server (SeaweedFS, tests/conftest.py) for DVC remotes, and the toy DVC pipeline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.toy import write_toy_repo
from tests.support.s3server import BUCKET as BUCKET
from tests.support.s3server import S3Server

# Prefect's home, quiet settings and fast retries are the session's (tests/conftest.py
# SESSION_ENV), set before anything imports prefect and restored at the end.

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def harness() -> Iterator[None]:
    """Prefect's test harness: a temporary API for flows run in this process."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1; yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def s3_endpoint(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's real S3 server (SeaweedFS) for DVC remotes and registries, its AWS
    credentials in the environment for this test only."""
    for var, value in s3_server.env.items():
        monkeypatch.setenv(var, value)
    return s3_server.endpoint


def dvc(root: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        check=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )


def add_s3_remote(root: Path, endpoint: str, prefix: str) -> None:
    """Make a prefix of the test bucket on the S3 server the repo's default DVC remote."""
    dvc(root, "remote", "add", "-d", "s3", f"s3://{BUCKET}/{prefix}")
    dvc(root, "remote", "modify", "s3", "endpointurl", endpoint)


@pytest.fixture
def runlog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """File the toy stages append `<stage> <worker>` to, one line per run."""
    path = tmp_path / "runlog.txt"
    path.touch()
    monkeypatch.setenv("TOY_RUNLOG", str(path))
    monkeypatch.setenv("TOY_WORKER", "main")
    monkeypatch.delenv("TOY_FAIL_STAGE", raising=False)
    return path


def runs(runlog: Path) -> list[str]:
    return runlog.read_text().split("\n")[:-1]


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    return write_toy_repo(
        tmp_path / "repo",
        {"ort-cpu": {"backend": "onnxruntime"}, "edge": {"backend": "onnxruntime"}},
    )
