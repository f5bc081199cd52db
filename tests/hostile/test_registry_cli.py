# ruff: noqa: F811 -- the registry fixtures are imported here and used as parameters
"""Hostile and clumsy input to the registry and the `onceflow` CLI, one row per case.

Each row builds its input (a published registry, then something broken, tampered or
malicious), runs the real CLI (typer's runner; two rows through the console script), and
asserts: exit code 2, one ``error: ...`` line on stderr naming the expected word, no traceback,
nothing written (the work folder and the registry are byte-identical afterwards), and no
secret echoed (the AWS secret of the environment, or a secret the row planted in its input).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from onceflow.cli import app
from onceflow.package.manifest import MANIFEST, ONNX
from onceflow.registry import open_store, publish_package
from onceflow.registry.pull import load_entries
from tests.registry.fixtures import (  # noqa: F401 -- fixtures shared with the registry tests
    BUCKET,
    SECRET,
    aws_env,
    make_package,
    moto_endpoint,
    s3_uri,
)

T = "ort-cpu"
MID = "r24-aaaa"
PLANTED = ("secretsecret", "hunter2", "AKIAXXXX", "AKIAIOSFODNN7EXAMPLE", SECRET)


@dataclass
class World:
    """A registry holding one published model, the local package it came from, a work dir."""

    tmp: Path
    uri: str
    kind: str  # "file" or "s3"
    pkg: Path
    work: Path

    @property
    def revision(self) -> str:
        return str(load_entries(open_store(self.uri), T)[-1].revision)

    def _key(self, rel: str) -> str:
        return f"{self.uri.split('/', 3)[3]}/{rel}"

    def put(self, rel: str, data: bytes) -> None:
        """Write an object behind the registry's back (tampering, corruption)."""
        if self.kind == "file":
            path = Path(self.uri[len("file://") :], rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            boto3.client("s3").put_object(Bucket=BUCKET, Key=self._key(rel), Body=data)

    def get(self, rel: str) -> bytes:
        if self.kind == "file":
            return Path(self.uri[len("file://") :], rel).read_bytes()
        return boto3.client("s3").get_object(Bucket=BUCKET, Key=self._key(rel))["Body"].read()

    def obj(self, name: str) -> str:
        return f"{T}/{MID}/{self.revision}/{name}"

    def index(self) -> dict:
        return json.loads(self.get(f"{T}/index.json"))

    def snapshot(self) -> dict[str, str]:
        files = {
            str(p.relative_to(self.tmp)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.tmp.rglob("*"))
            if p.is_file()
        }
        if self.kind == "s3":
            prefix = self._key("")
            resp = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
            files |= {f"s3:{o['Key']}": o["ETag"] for o in resp.get("Contents", [])}
        return files


Build = Callable[[World], list[str]]


def _pull(w: World, *extra: str) -> list[str]:
    dest = str(w.work / "model")
    return ["pull", "--registry", w.uri, "--target", T, "--dest", dest, *extra]


def _pull_target(w: World, target: str) -> list[str]:
    dest = str(w.work / "model")
    return [
        "pull",
        "--registry",
        w.uri,
        "--target",
        target,
        "--dest",
        dest,
        "--max-latency-ms",
        "5",
    ]


def _pull_budget(w: World) -> list[str]:
    return _pull(w, "--max-latency-ms", "100")


def _index_doc(w: World, change: Callable[[dict], None]) -> list[str]:
    doc = w.index()
    change(doc)
    w.put(f"{T}/index.json", json.dumps(doc).encode())
    return _pull_budget(w)


def _tamper_object(w: World, name: str) -> list[str]:
    data = w.get(w.obj(name))
    w.put(w.obj(name), b"X" + data[1:])
    return _pull_budget(w)


def _traversal_manifest(w: World) -> list[str]:
    """A manifest listing ../../evil, with an index that pins it (a fully consistent attack)."""
    manifest = json.loads(w.get(w.obj(MANIFEST)))
    manifest["files"]["../../evil"] = {"sha256": "0" * 64, "size": 1}
    data = json.dumps(manifest).encode()
    w.put(w.obj(MANIFEST), data)

    def pin(doc: dict) -> None:
        doc["models"][0]["files"][MANIFEST] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }

    return _index_doc(w, pin)


def _user_folder(w: World) -> list[str]:
    (w.work / "model").mkdir()
    (w.work / "model" / "thesis.tex").write_text("years of work")
    return _pull_budget(w)


def _folder_named_like_the_model(w: World) -> list[str]:
    (w.work / "model" / ONNX).mkdir(parents=True)
    (w.work / "model" / ONNX / "keep.txt").write_text("a user's folder")
    return [*_pull_budget(w), "--force"]


def _dest_is_file(w: World) -> list[str]:
    (w.work / "model").write_text("a file, not a folder")
    return _pull_budget(w)


def _local_package(w: World, change: Callable[[Path], None]) -> list[str]:
    pkg = w.work / "art" / T / "r28-bbbb"
    make_package(w.work / "art", T, "r28-bbbb", accuracy=0.9, latency_ms=2.0, seed=5)
    change(pkg)
    return ["publish", "--registry", w.uri, str(pkg)]


def _mutate_entry(**fields: object) -> Build:
    return lambda w: _index_doc(w, lambda d: d["models"][0].update(fields))


@dataclass(frozen=True)
class Case:
    id: str
    build: Build
    word: str  # the message must name this
    stores: tuple[str, ...] = ("file",)


BOTH = ("file", "s3")
CASES = [
    # --- registry URIs (credentials never echoed, whatever the shape) ---
    Case("uri-userinfo", lambda w: ["ls", "--registry", "s3://AKIAXXXX:secretsecret@bucket/p"],
         "credentials"),
    Case("uri-key-colon-no-at", lambda w: ["ls", "--registry", "s3://AKIAXXXX:secretsecret/b"],
         "bucket name"),
    Case("uri-query-signature",
         lambda w: ["ls", "--registry", "s3://bucket/p?X-Amz-Signature=secretsecret"], "query"),
    Case("uri-userinfo-in-path", lambda w: ["ls", "--registry", "s3://bucket/p/u:hunter2@x"],
         "credentials"),
    Case("uri-file-userinfo", lambda w: ["ls", "--registry", "file://u:hunter2@host/reg"],
         "credentials"),
    Case("uri-bad-scheme", lambda w: ["ls", "--registry", "ftp://u:hunter2@host/x"], "scheme"),
    Case("uri-bad-bucket", lambda w: ["ls", "--registry", "s3://Bad_Bucket!/x"], "bucket name"),
    Case("uri-prefix-traversal", lambda w: ["ls", "--registry", "s3://bucket/a/../etc"], "prefix"),
    Case("uri-no-scheme", lambda w: ["ls", "--registry", "registry"], "file://"),
    Case("uri-aws-key-in-bucket", lambda w: ["ls", "--registry", "s3://AKIAIOSFODNN7EXAMPLE/x"],
         "bucket name"),
    Case("endpoint-credentials",
         lambda w: ["ls", "--registry", w.uri, "--endpoint-url", "http://AKIAXXXX:hunter2@h:9"],
         "credentials"),
    Case("endpoint-not-http", lambda w: ["ls", "--registry", w.uri, "--endpoint-url", "ftp://h"],
         "e.g. http://127.0.0.1:9000"),
    Case("registry-missing", lambda w: ["ls", "--registry", f"file://{w.tmp / 'nope'}"],
         "does not exist"),
    Case("s3-bucket-missing", lambda w: ["ls", "--registry", "s3://no-such-bucket-x/p"],
         "bucket 'no-such-bucket-x' does not exist", ("s3",)),
    # --- names and path traversal ---
    Case("target-traversal", lambda w: ["ls", "--registry", w.uri, "--target", "../etc"],
         "invalid target", BOTH),
    Case("target-unknown", lambda w: _pull_target(w, "gpu"), "unknown target", BOTH),
    Case("target-upper-case", lambda w: _pull_target(w, "ORT-CPU"), "invalid target"),
    Case("model-id-traversal", lambda w: _pull(w, "--model-id", "../../etc/passwd"),
         "invalid model id", BOTH),
    Case("revision-not-hex", lambda w: _pull(w, "--model-id", MID, "--revision", "../zz"),
         "--revision"),
    Case("revision-unknown", lambda w: _pull(w, "--model-id", MID, "--revision", "deadbeef"),
         "known: r24-aaaa@"),
    # --- corrupt or tampered index.json ---
    Case("index-not-json", lambda w: (w.put(f"{T}/index.json", b"{not json"), _pull_budget(w))[1],
         "index is corrupt", BOTH),
    Case("index-future-format", lambda w: _index_doc(w, lambda d: d.update(format_version=99)),
         "upgrade onceflow", BOTH),
    Case("index-other-target", lambda w: _index_doc(w, lambda d: d.update(target="trt")),
         "index is for target"),
    Case("index-models-not-list", lambda w: _index_doc(w, lambda d: d.update(models={"a": 1})),
         "'models' must be a list"),
    Case("index-entry-traversal-id", _mutate_entry(model_id="../../x"), "invalid model id"),
    Case("index-entry-latency-text", _mutate_entry(latency_ms="fast"), "malformed", BOTH),
    Case("index-entry-nan-accuracy", _mutate_entry(test_accuracy=float("nan")), "malformed"),
    Case("index-entry-no-files", _mutate_entry(files={}), "lacks"),
    Case("index-entry-bad-revision", _mutate_entry(revision="../../etc"), "invalid revision"),
    Case("index-duplicate-entry",
         lambda w: _index_doc(w, lambda d: d["models"].append(d["models"][0])), "listed twice"),
    # --- tampered objects and manifests ---
    Case("tampered-onnx", lambda w: _tamper_object(w, ONNX), "verification failed", BOTH),
    Case("tampered-manifest", lambda w: _tamper_object(w, MANIFEST), "verification failed", BOTH),
    Case("manifest-path-traversal", _traversal_manifest, "allowed"),
    Case("object-missing",
         lambda w: (Path(w.uri[7:], w.obj(ONNX)).unlink(), _pull_budget(w))[1], "not found"),
    # --- CLI arguments and destinations ---
    Case("dest-holds-user-file", _user_folder, "--force", BOTH),
    Case("dest-is-a-file", _dest_is_file, "not a directory"),
    Case("dest-unwritable", lambda w: _pull(w, "--max-latency-ms", "5")[:6]
         + ["/proc/onceflow-no/model", "--max-latency-ms", "5"], "cannot write there"),
    Case("dest-name-clash-force", _folder_named_like_the_model, "is not a file"),
    Case("no-choice", lambda w: _pull(w), "--min-accuracy"),
    Case("latency-negative", lambda w: _pull(w, "--max-latency-ms", "-1"), "--max-latency-ms"),
    Case("latency-not-number", lambda w: _pull(w, "--max-latency-ms", "fast"),
         "--max-latency-ms"),
    Case("accuracy-over-one", lambda w: _pull(w, "--min-accuracy", "1.5"), "--min-accuracy"),
    Case("missing-target", lambda w: ["pull", "--registry", w.uri, "--dest", str(w.work / "m")],
         "--target"),
    Case("unknown-option", lambda w: ["ls", "--registry", w.uri, "--secret", "hunter2"],
         "No such option"),
    Case("nothing-fits", lambda w: _pull(w, "--max-latency-ms", "0.001"), "fastest available",
         BOTH),
    Case("show-unknown-model", lambda w: ["show", "r99-none", "--registry", w.uri], "is not in"),
    Case("show-artifacts-missing",
         lambda w: ["show", MID, "--artifacts", str(w.work / "nope")], "no such directory"),
    # --- publishing damaged local packages ---
    Case("publish-tampered-onnx",
         lambda w: _local_package(w, lambda p: (p / ONNX).write_bytes(b"evil" * 1024)),
         "does not match", BOTH),
    Case("publish-manifest-not-json",
         lambda w: _local_package(w, lambda p: (p / MANIFEST).write_text("{")), "not valid JSON"),
    Case("publish-no-artifacts", lambda w: ["publish", "--registry", w.uri, str(w.work / "no")],
         "no artifacts directory"),
]  # fmt: skip


def _case_params() -> list:
    return [pytest.param(c, kind, id=f"{c.id}-{kind}") for c in CASES for kind in c.stores]


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(kind: str) -> World:
        uri = request.getfixturevalue("s3_uri") if kind == "s3" else f"file://{tmp_path / 'reg'}"
        pkg = make_package(tmp_path / "art", T, MID, accuracy=0.8, latency_ms=1.0)
        publish_package(open_store(uri), pkg)
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)  # outside any project: relative paths stay in the work dir
        return World(tmp_path, uri, kind, pkg, work)

    return make


@pytest.mark.parametrize(("case", "kind"), _case_params())
def test_hostile_registry_cli_input(case: Case, kind: str, world, monkeypatch) -> None:
    w = world(kind)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    args = case.build(w)
    before = w.snapshot()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    assert isinstance(res.exception, SystemExit)  # no uncaught exception, no traceback
    err = res.stderr
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert case.word in err, err
    assert "Traceback" not in err and res.stdout == ""
    for secret in PLANTED:
        assert secret not in err
    assert w.snapshot() == before  # nothing written, nothing deleted (folder and registry)


def test_case_count() -> None:
    assert len(_case_params()) >= 40


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--registry", "s3://AKIAXXXX:secretsecret@bucket/p"],
        ["pull", "--target", "ort-cpu", "--dest", ".", "--max-latency-ms", "x"],
    ],
)
def test_console_script_one_line(args: list[str], tmp_path: Path) -> None:
    """The installed console script: exit 2, one line, no traceback, nothing in the cwd."""
    exe = Path(sys.executable).with_name("onceflow")
    proc = subprocess.run([str(exe), *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "secretsecret" not in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
