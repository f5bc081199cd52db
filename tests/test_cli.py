# ruff: noqa: F811 -- the registry fixtures are imported here and used as parameters
"""The `onceflow` CLI: ls / pull / publish against a registry, errors as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onceflow.cli import app
from tests.registry.fixtures import (  # noqa: F401 -- fixtures shared with the registry tests
    SECRET,
    aws_env,
    make_package,
    moto_endpoint,
    registry_uri,
    s3_uri,
)

T = "ort-cpu"


@pytest.fixture
def published(registry_uri: str, tmp_path: Path) -> str:
    art = tmp_path / "artifacts"
    make_package(art, T, "r24-aaaa", accuracy=0.80, latency_ms=1.0, seed=1)
    make_package(art, T, "r28-bbbb", accuracy=0.86, latency_ms=2.0, seed=2)
    res = CliRunner().invoke(app, ["publish", "--registry", registry_uri, str(art)])
    assert res.exit_code == 0, res.output
    assert res.output.split() == ["published", "ort-cpu/r24-aaaa", "published", "ort-cpu/r28-bbbb"]
    return registry_uri


def test_ls_prints_a_table(published: str) -> None:
    res = CliRunner().invoke(app, ["ls", "--registry", published, "--target", T])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:4] == ["TARGET", "MODEL", "ID", "ACC"]
    assert lines[1].split()[:4] == [T, "r24-aaaa", "80.00", "1.000"]
    assert lines[2].split()[:4] == [T, "r28-bbbb", "86.00", "2.000"]


def test_pull_within_budget(published: str, tmp_path: Path) -> None:
    dest = tmp_path / "deploy"
    args = [
        "pull",
        "--registry",
        published,
        "--target",
        T,
        "--max-latency-ms",
        "2.5",
        "--dest",
        str(dest),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "pulled ort-cpu/r28-bbbb" in res.output
    assert (dest / "model.onnx").is_file()


def test_pull_errors_are_one_clear_line(published: str, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["pull", "--registry", published, "--dest", str(tmp_path / "d")]
    res = runner.invoke(app, [*base, "--target", T, "--max-latency-ms", "0.5"])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0
    assert "fastest available is r24-aaaa at 1.000 ms" in res.output
    res = runner.invoke(app, [*base, "--target", "nope", "--max-latency-ms", "5"])
    assert res.exit_code == 1 and "unknown target 'nope'" in res.output
    res = runner.invoke(app, [*base, "--target", T])
    assert res.exit_code == 1 and "--max-latency-ms" in res.output
    assert not (tmp_path / "d").exists()
    assert SECRET not in res.output


@pytest.mark.slow
def test_console_script_reports_bad_uri(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("onceflow")
    proc = subprocess.run(
        [str(exe), "ls", "--registry", "ftp://user:pw@host/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: registry URI 'ftp://***@host/x': unsupported scheme 'ftp' (use file:// or s3://)"
    )
