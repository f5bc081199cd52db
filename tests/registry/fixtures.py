"""Registry test helpers and fixtures, shared by conftest.py and other test packages: registries
parametrized over file:// and s3:// (the session's real S3 server, SeaweedFS; see
``tests/conftest.py``), moto's server only where a test injects a fault the real one cannot
produce, and small fake packages (random bytes standing in for ONNX; the registry never parses
it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest

from onceflow.package.manifest import CARD, FORMAT_VERSION, ONNX, write_manifest
from tests.support.s3server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support.s3server import BUCKET as S3_BUCKET

SECRET = SECRET_KEY  # the test secret: must never show up in output
BUCKET = S3_BUCKET


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a mock): only for faults the real server cannot inject."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials through the standard chain; no real AWS config is read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=["file", "s3"])
def registry_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A fresh, empty registry: a temp dir, or a unique prefix in the real S3 server's bucket.

    For s3 the endpoint is given the standard way (AWS_ENDPOINT_URL), so subprocesses and the
    CLI find it too.
    """
    if request.param == "file":
        return f"file://{tmp_path / 'registry'}"
    return request.getfixturevalue("s3_uri")


@pytest.fixture
def s3_uri(s3_server: S3Server, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh prefix in the real S3 server's bucket; the endpoint set the standard way
    (AWS_ENDPOINT_URL)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    return f"s3://{BUCKET}/reg-{uuid.uuid4().hex[:10]}"


def make_package(
    root: Path,
    target: str,
    model_id: str,
    *,
    accuracy: float,
    latency_ms: float,
    seed: int = 0,
    size: int = 4096,
) -> Path:
    """A package dir ``root/<target>/<model_id>/`` with a manifest that pins its files."""
    pkg = root / target / model_id
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / ONNX).write_bytes(np.random.default_rng(seed).bytes(size))
    (pkg / CARD).write_text(f"# {model_id}\n\nA test package.\n")
    write_manifest(
        pkg,
        {
            "format_version": FORMAT_VERSION,
            "model_id": model_id,
            "target": target,
            "backend": "onnxruntime",
            "arch": {"string": f"arch-{seed}", "json": {}},
            "test_accuracy": accuracy,
            "latency_ms": {"measured": latency_ms, "predicted": latency_ms * 1.1, "budget": None},
            "created_at": "2024-01-01T00:00:00Z",
        },
    )
    return pkg
