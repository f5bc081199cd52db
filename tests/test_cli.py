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
    words = [w.split("@")[0] for w in res.output.split()]
    assert words == ["published", "ort-cpu/r24-aaaa", "published", "ort-cpu/r28-bbbb"]
    return registry_uri


def test_ls_prints_a_table(published: str) -> None:
    res = CliRunner().invoke(app, ["ls", "--registry", published, "--target", T])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:5] == ["TARGET", "MODEL", "ID", "REVISION", "ACC"]
    row = lines[1].split()
    assert row[:2] == [T, "r24-aaaa"] and row[3:5] == ["80.00", "1.000"] and len(row[2]) == 16
    assert lines[2].split()[:2] == [T, "r28-bbbb"] and lines[2].split()[3:5] == ["86.00", "2.000"]


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
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0
    assert "fastest available is r24-aaaa at 1.000 ms" in res.output
    res = runner.invoke(app, [*base, "--target", "nope", "--max-latency-ms", "5"])
    assert res.exit_code == 2 and "unknown target 'nope'" in res.output
    res = runner.invoke(app, [*base, "--target", T])
    assert (
        res.exit_code == 2 and "--max-latency-ms" in res.output and "--min-accuracy" in res.output
    )
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
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: registry URI 'ftp://***@host/x': unsupported scheme 'ftp' (use file:// or s3://)"
    )


def test_pull_with_only_min_accuracy_takes_the_fastest_that_meets_it(
    published: str, tmp_path: Path
) -> None:
    args = ["pull", "--registry", published, "--target", T, "--dest", str(tmp_path / "d")]
    res = CliRunner().invoke(app, [*args, "--min-accuracy", "0.85"])
    assert res.exit_code == 0, res.output
    assert "pulled ort-cpu/r28-bbbb@" in res.output
    res = CliRunner().invoke(app, [*args, "--min-accuracy", "0.5"])
    assert res.exit_code == 0 and "pulled ort-cpu/r24-aaaa@" in res.output  # the fastest


def test_endpoint_url_option(s3_uri: str, moto_endpoint: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option says where S3 is
    make_package(tmp_path / "art", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    ep = ["--registry", s3_uri, "--endpoint-url", moto_endpoint, "--max-attempts", "1"]
    res = CliRunner().invoke(app, ["publish", *ep, str(tmp_path / "art")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["ls", *ep])
    assert res.exit_code == 0 and "r24-aaaa" in res.output
    res = CliRunner().invoke(app, ["ls", *ep[:2], "--endpoint-url", "http://u:pw@127.0.0.1:1"])
    assert res.exit_code == 2 and "credentials do not belong" in res.output
    assert "pw" not in res.output


def test_relative_registry_resolves_against_the_project_root(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "sub" / "deeper").mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    (project / "params.yaml").write_text("{}\n")
    make_package(tmp_path / "art", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    monkeypatch.chdir(project)
    assert CliRunner().invoke(app, ["publish", str(tmp_path / "art")]).exit_code == 0
    assert (project / "registry" / T / "index.json").is_file()
    monkeypatch.chdir(project / "sub" / "deeper")  # the default file://registry: the project's
    res = CliRunner().invoke(app, ["ls"])
    assert res.exit_code == 0 and "r24-aaaa" in res.output, res.output
    monkeypatch.chdir(tmp_path)  # outside the project: relative to the working directory
    res = CliRunner().invoke(app, ["ls"])
    assert res.exit_code == 2 and f"{tmp_path / 'registry'} does not exist" in res.output


def test_help_has_no_placeholders() -> None:
    for cmd in ([], ["ls"], ["pull"], ["show"], ["publish"]):
        res = CliRunner().invoke(app, [*cmd, "--help"])
        assert res.exit_code == 0, res.output
        for junk in ("<bool>", "<str>", "<path>", "{", "range>"):
            assert junk not in res.output, (cmd, junk)
    pull_help = " ".join(CliRunner().invoke(app, ["pull", "--help"]).output.split())
    assert "Alone: the fastest model that meets it" in pull_help
    assert "from the project root" in pull_help


def test_show_prints_the_lineage(published: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["show", "r28-bbbb", "--registry", published])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].startswith("model      r28-bbbb (target ort-cpu, revision ")
    local = CliRunner().invoke(
        app, ["show", "r28-bbbb", "--artifacts", str(tmp_path / "artifacts")]
    )
    assert local.exit_code == 0 and "not recorded" in local.output
    res = CliRunner().invoke(app, ["show", "r99-zzzz", "--registry", published])
    assert res.exit_code == 2 and "'r99-zzzz' is not in" in res.output


@pytest.mark.slow
def test_pull_into_the_working_directory(published: str, tmp_path: Path) -> None:
    """`pull --dest .` with the real console script: files land, no temp dir is left."""
    exe = Path(sys.executable).with_name("onceflow")
    work = tmp_path / "work"
    work.mkdir()
    cmd = [str(exe), "pull", "--registry", published, "--target", T, "--max-latency-ms", "5"]
    proc = subprocess.run([*cmd, "--dest", "."], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["README.md", "manifest.json", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) in (
        ["artifacts", "registry", "work"],
        ["artifacts", "work"],  # s3: no registry folder
    )
    (work / "notes.txt").write_text("mine")  # now the folder holds a user's file
    proc = subprocess.run([*cmd, "--dest", "."], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert (work / "notes.txt").read_text() == "mine"
