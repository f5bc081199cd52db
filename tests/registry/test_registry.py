"""Publish / ls / pull against real stores: a local dir and moto's S3 server (real boto3)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest

from onceflow.config import PublishConfig
from onceflow.errors import RegistryError, StoreUnreachable
from onceflow.io import sha256_file
from onceflow.package.manifest import MANIFEST, ONNX
from onceflow.registry import (
    StoreOptions,
    list_models,
    open_store,
    publish_all,
    publish_package,
    pull_model,
    update_index,
)
from onceflow.registry import publish as publish_mod
from onceflow.registry.index import add_revision, entry_from_manifest
from onceflow.registry.publish import run_publish
from onceflow.registry.pull import load_entries
from onceflow.registry.store import INDEX, object_key
from tests.registry.fixtures import BUCKET, SECRET, make_package
from tests.support.s3server import ACCESS_KEY, S3Server

T = "ort-cpu"


def _index_bytes(store, target: str = T) -> bytes | None:
    got = store.read(object_key(target, INDEX))
    return None if got is None else got[0]


def test_run_publish_counts_each_status(tmp_path: Path) -> None:
    art = tmp_path / "artifacts"
    make_package(art, T, "r24-aaaa", accuracy=0.80, latency_ms=1.0, seed=1)
    make_package(art, "ort-int8", "r28-bbbb", accuracy=0.86, latency_ms=2.0, seed=2)
    cfg = PublishConfig(uri=f"file://{tmp_path / 'registry'}")
    first = run_publish(cfg, art)
    assert (first.details["n_published"], first.details["n_unchanged"]) == (2, 0)
    again = run_publish(cfg, art)  # idempotent: nothing new, every package verified
    assert (again.details["n_published"], again.details["n_unchanged"]) == (0, 2)
    assert again.headline == {"models": 2} and again.registry == first.registry
    assert [p["target"] for p in again.details["packages"]] == ["ort-cpu", "ort-int8"]


def test_relative_registry_lands_in_the_users_checkout_not_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow's stage runs in a throwaway workspace that is itself a project folder; with
    ONCEFLOW_PROJECT_ROOT (set by the flows) `file://registry` means the user's checkout."""
    checkout, workspace = tmp_path / "checkout", tmp_path / "runs" / "onceflow-run-x"
    for folder in (checkout, workspace):
        folder.mkdir(parents=True)
        (folder / "dvc.yaml").write_text("stages: {}\n")
        (folder / "params.yaml").write_text("{}\n")
    make_package(workspace / "artifacts", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    monkeypatch.chdir(workspace)
    cfg = PublishConfig(uri="file://registry")
    assert run_publish(cfg, "artifacts").registry == f"file://{workspace / 'registry'}"
    monkeypatch.setenv("ONCEFLOW_PROJECT_ROOT", str(checkout))
    run = run_publish(cfg, "artifacts")
    assert run.registry == f"file://{checkout / 'registry'}"
    assert (checkout / "registry" / T / INDEX).is_file()


def test_round_trip_publish_ls_pull(registry_uri: str, tmp_path: Path) -> None:
    store = open_store(registry_uri)
    art = tmp_path / "artifacts"
    fast = make_package(art, T, "r24-aaaa", accuracy=0.80, latency_ms=1.0, seed=1)
    mid = make_package(art, T, "r28-bbbb", accuracy=0.86, latency_ms=2.0, seed=2)
    make_package(art, T, "r32-cccc", accuracy=0.90, latency_ms=4.0, seed=3)

    results = publish_all(store, art)
    assert [r.status for r in results] == ["published"] * 3
    assert results[0].uploaded == ("model.onnx", "README.md", "manifest.json")

    listed = list_models(store)
    assert list(listed) == [T]
    assert [e.model_id for e in listed[T]] == ["r24-aaaa", "r28-bbbb", "r32-cccc"]  # by latency

    dest = tmp_path / "deploy"
    res = pull_model(store, T, dest, max_latency_ms=3.0)
    assert res.entry.model_id == "r28-bbbb"  # most accurate within 3 ms
    assert sorted(p.name for p in dest.iterdir()) == sorted(["README.md", MANIFEST, ONNX])
    for name in ("README.md", MANIFEST, ONNX):
        assert (dest / name).read_bytes() == (mid / name).read_bytes()

    # With an accuracy floor nothing fits; the message names the fastest model.
    with pytest.raises(RegistryError, match=r"fastest available is r24-aaaa at 1\.000 ms"):
        pull_model(store, T, tmp_path / "x", max_latency_ms=1.5, min_accuracy=0.85)
    assert not (tmp_path / "x").exists()

    # An explicit id; a second pull into the same dest replaces the earlier pull.
    res = pull_model(store, T, dest, model_id="r24-aaaa")
    assert (dest / ONNX).read_bytes() == (fast / ONNX).read_bytes()


def _revision(store, model_id: str, target: str = T) -> str | None:
    return [e for e in load_entries(store, target) if e.model_id == model_id][-1].revision


def test_identical_republish_changes_nothing_and_new_manifests_are_revisions(
    registry_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(registry_uri)
    pkg = make_package(tmp_path / "art", T, "r28-aaaa", accuracy=0.8, latency_ms=1.0)
    first = publish_package(store, pkg)
    assert first.status == "published" and first.revision
    before = store.read(object_key(T, INDEX))
    again = publish_package(store, pkg)
    assert (again.status, again.uploaded) == ("unchanged", ())
    assert store.read(object_key(T, INDEX)) == before  # same bytes, same version token

    # Same model rebuilt with another latency measurement: a new revision, the old one kept.
    remeasured = make_package(tmp_path / "art3", T, "r28-aaaa", accuracy=0.8, latency_ms=1.7)
    assert (remeasured / ONNX).read_bytes() == (pkg / ONNX).read_bytes()
    with caplog.at_level(logging.WARNING, logger="onceflow.registry.publish"):
        second = publish_package(store, remeasured)
    assert second.status == "published" and second.revision != first.revision
    assert f"new revision {second.revision}" in caplog.text and "1.0000 -> 1.7000 ms" in caplog.text
    history = [(e.revision, e.latency_ms) for e in load_entries(store, T)]
    assert history == [(first.revision, 1.0), (second.revision, 1.7)]
    [listed] = list_models(store, T)[T]
    assert (listed.revision, listed.latency_ms) == (second.revision, 1.7)  # newest by default
    assert len(list_models(store, T, all_revisions=True)[T]) == 2

    # pull takes the newest unless --revision names another; both verify byte for byte.
    assert pull_model(store, T, tmp_path / "new", model_id="r28-aaaa").entry.latency_ms == 1.7
    old = pull_model(store, T, tmp_path / "old", model_id="r28-aaaa", revision=first.revision[:8])
    assert old.entry.latency_ms == 1.0
    assert (tmp_path / "old" / MANIFEST).read_bytes() == (pkg / MANIFEST).read_bytes()
    with pytest.raises(RegistryError, match="no revision of r28-aaaa"):
        pull_model(store, T, tmp_path / "x", model_id="r28-aaaa", revision="abcdef12")


def test_tampered_object_is_refused_and_dest_stays_clean(registry_uri: str, tmp_path: Path) -> None:
    store = open_store(registry_uri)
    pkg = make_package(tmp_path / "art", T, "r28-aaaa", accuracy=0.8, latency_ms=1.0)
    rev = publish_package(store, pkg).revision
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"tampered" + (pkg / ONNX).read_bytes()[8:])
    # Overwrite the stored object behind the registry's back (same size, different bytes).
    if registry_uri.startswith("file://"):
        Path(registry_uri[len("file://") :], T, "r28-aaaa", rev, ONNX).write_bytes(bad.read_bytes())
    else:
        prefix = registry_uri.split("/", 3)[3]
        boto3.client("s3").put_object(
            Bucket=BUCKET, Key=f"{prefix}/{T}/r28-aaaa/{rev}/{ONNX}", Body=bad.read_bytes()
        )
    dest = tmp_path / "deploy"
    with pytest.raises(RegistryError, match=r"model\.onnx: verification failed"):
        pull_model(store, T, dest, max_latency_ms=10)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".deploy")] == []

    dest.mkdir()  # an existing empty dest stays empty
    with pytest.raises(RegistryError):
        pull_model(store, T, dest, max_latency_ms=10)
    assert list(dest.iterdir()) == []

    # Publishing the same package again verifies what is stored and repairs it.
    fixed = publish_package(store, pkg)
    assert (fixed.status, fixed.uploaded) == ("repaired", (ONNX,))
    assert pull_model(store, T, dest, max_latency_ms=10).entry.revision == rev
    assert (dest / ONNX).read_bytes() == (pkg / ONNX).read_bytes()
    assert publish_package(store, pkg).status == "unchanged"


def test_fault_after_uploads_leaves_index_and_rerun_completes(
    registry_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(registry_uri)
    art = tmp_path / "art"
    publish_package(store, make_package(art, T, "r24-aaaa", accuracy=0.8, latency_ms=1.0, seed=1))
    before = _index_bytes(store)
    pkg = make_package(art, T, "r28-bbbb", accuracy=0.9, latency_ms=2.0, seed=2)

    def crash(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt("injected crash between the file uploads and the index write")

    monkeypatch.setattr(publish_mod, "update_index", crash)
    with pytest.raises(KeyboardInterrupt):
        publish_package(store, pkg)
    assert _index_bytes(store) == before  # the index never saw the half-published model
    rev = entry_from_manifest(
        json.loads((pkg / MANIFEST).read_text()), {"sha256": sha256_file(pkg / MANIFEST), "size": 0}
    ).revision
    assert store.stored_sha256(object_key(T, "r28-bbbb", ONNX, revision=rev)) == sha256_file(
        pkg / ONNX
    )
    with pytest.raises(RegistryError, match="fastest available is r24-aaaa"):
        pull_model(store, T, tmp_path / "d", max_latency_ms=0.5)

    monkeypatch.undo()
    again = publish_package(store, pkg)
    assert (again.status, again.uploaded) == ("published", ())  # files were already there
    assert pull_model(store, T, tmp_path / "d", max_latency_ms=5).entry.model_id == "r28-bbbb"


def test_conflicting_index_write_is_retried(registry_uri: str, tmp_path: Path) -> None:
    """Deterministic interleaving: another publisher lands between our read and our write."""
    store = open_store(registry_uri)
    art = tmp_path / "art"
    ours = make_package(art, T, "r24-aaaa", accuracy=0.8, latency_ms=1.0, seed=1)
    theirs = make_package(art, T, "r28-bbbb", accuracy=0.9, latency_ms=2.0, seed=2)
    publish_package(store, make_package(art, T, "r20-0000", accuracy=0.7, latency_ms=0.5))
    entry = entry_from_manifest(
        json.loads((ours / MANIFEST).read_text()), {"sha256": "0" * 64, "size": 1}
    )
    calls = []

    def change(entries):
        calls.append(len(entries))
        if len(calls) == 1:
            publish_package(store, theirs)  # lands after our read: our write must conflict
        return add_revision(entries, entry)

    assert update_index(store, T, change, backoff_s=0.001)
    assert calls == [1, 2]
    ids = [e.model_id for e in list_models(store, T)[T]]
    assert ids == ["r20-0000", "r24-aaaa", "r28-bbbb"]


@pytest.mark.slow
def test_two_processes_publishing_concurrently(registry_uri: str, tmp_path: Path) -> None:
    store = open_store(registry_uri)
    art = tmp_path / "art"
    groups = [
        [
            make_package(
                art,
                T,
                f"r{28 - p}-{p}{i}",
                accuracy=0.5 + 0.01 * i,
                latency_ms=1.0 + i,
                seed=10 * p + i,
            )
            for i in range(5)
        ]
        for p in range(2)
    ]
    script = textwrap.dedent(
        """
        import sys, time
        from onceflow.registry import open_store, publish_package
        from onceflow.registry.store import IndexConflict
        store = open_store(sys.argv[1])
        put_if, conflicts = store.put_if, []

        def slow_put_if(*args):  # a slow link: widens the read -> conditional-write window
            time.sleep(0.2)
            try:
                return put_if(*args)
            except IndexConflict:
                conflicts.append(1)
                raise

        store.put_if = slow_put_if
        start = float(sys.argv[2])
        while time.time() < start:  # both processes begin publishing at the same moment
            time.sleep(0.005)
        for pkg in sys.argv[3:]:
            publish_package(store, pkg, retries=50)
        print(len(conflicts))
        """
    )
    import time

    start = str(time.time() + 3.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, registry_uri, start, *map(str, g)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for g in groups
    ]
    conflicts = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        conflicts += int(out.decode().split()[-1])
    assert conflicts >= 1  # the publishers really raced (and both still landed everything)
    ids = sorted(e.model_id for e in list_models(store, T)[T])
    assert ids == sorted(pkg.name for g in groups for pkg in g)


def test_unknown_and_invalid_targets(registry_uri: str, tmp_path: Path) -> None:
    store = open_store(registry_uri)
    publish_package(
        store, make_package(tmp_path / "art", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    )
    with pytest.raises(RegistryError, match=r"unknown target 'trt-gpu'.*targets: ort-cpu"):
        pull_model(store, "trt-gpu", tmp_path / "d", max_latency_ms=10)
    for bad in ("../ort-cpu", "ort-cpu/../x", "/etc", "ORT", ""):
        with pytest.raises(RegistryError, match="invalid target"):
            list_models(store, bad)
    with pytest.raises(RegistryError, match="invalid model id"):
        pull_model(store, T, tmp_path / "d", model_id="../../etc/passwd")
    assert not (tmp_path / "d").exists()


def test_unreachable_endpoint_gives_clear_error(aws_env: None, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = StoreOptions(
        endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2, connect_timeout_s=0.5
    )
    store = open_store("s3://some-bucket/models", opts)
    with pytest.raises(RegistryError) as err:
        list_models(store, T)
    msg = str(err.value)
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{port} after 2 attempt(s)" in msg
    assert SECRET not in msg
    # Transient, not bad input: the stage exits 75 (EX_TEMPFAIL) and the flows retry it.
    assert isinstance(err.value, StoreUnreachable) and err.value.exit_code == 75
    pkg = make_package(tmp_path / "art", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    with pytest.raises(RegistryError, match="cannot reach"):
        publish_package(store, pkg)


def _list_error(uri: str, s3_server: S3Server) -> RegistryError:
    """The RegistryError `onceflow ls` gets from the real server (SeaweedFS checks signatures
    and permissions); it never shows the secret and is bad input (exit code 2)."""
    opts = StoreOptions(endpoint_url=s3_server.endpoint, max_attempts=1)
    with pytest.raises(RegistryError) as err:
        list_models(open_store(uri, opts))
    assert SECRET not in str(err.value) and err.value.exit_code == 2
    assert not isinstance(err.value, StoreUnreachable)
    return err.value


def test_missing_bucket_on_the_real_server(aws_env: None, s3_server: S3Server) -> None:
    err = _list_error("s3://no-such-bucket/x", s3_server)
    assert str(err) == (
        f"list s3://no-such-bucket: bucket 'no-such-bucket' does not exist at "
        f"{s3_server.endpoint} (create it, or check the registry URI and AWS_ENDPOINT_URL)"
    )


ACCESS_DENIED = (
    "list s3://onceflow-test: access denied ({code}) at {endpoint}; check the AWS "
    "credentials (env, profile or role) and the bucket policy"
)


@pytest.mark.parametrize(
    ("var", "value", "code"),
    [
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret", "SignatureDoesNotMatch"),
        ("AWS_ACCESS_KEY_ID", "nobody", "InvalidAccessKeyId"),
    ],
)
def test_wrong_keys_on_the_real_server(
    aws_env: None, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, var: str, value: str,
    code: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(var, value)
    err = _list_error(f"s3://{BUCKET}/x", s3_server)
    assert str(err) == ACCESS_DENIED.format(code=code, endpoint=s3_server.endpoint)


def test_missing_keys(aws_env: None, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    err = _list_error(f"s3://{BUCKET}/x", s3_server)
    assert str(err) == (
        "list s3://onceflow-test: no usable AWS credentials; set AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role)"
    )


READER = ("onceflow-reader", "reader-secret-not-admin-42")


def _add_reader_identity(s3_server: S3Server) -> None:
    """A second identity on the server, valid keys but rights on another bucket only: its
    requests are signed correctly and refused for permission (AccessDenied). SeaweedFS reads
    its identities from the filer's /etc/iam/identity.json (its IAM API is read-only here);
    the admin identity is written back unchanged."""
    import urllib.request

    identities = {"identities": [
        {"name": "admin", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
         "credentials": [{"accessKey": s3_server.access_key, "secretKey": s3_server.secret_key}]},
        {"name": "reader", "actions": ["Read:elsewhere", "List:elsewhere"],
         "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}]},
    ]}  # fmt: skip
    boundary = "onceflow-identities"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="identity.json"\r\nContent-Type: application/json\r\n\r\n'
        + json.dumps(identities)
        + f"\r\n--{boundary}--\r\n"
    ).encode()
    url = f"http://127.0.0.1:{s3_server.ports['filer.port']}/etc/iam/identity.json"
    kind = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": kind})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201)


def test_access_denied_with_valid_keys(
    aws_env: None, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add_reader_identity(s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    deadline = time.monotonic() + 30  # the server reloads its identities from the filer
    while True:
        err = _list_error(f"s3://{BUCKET}/x", s3_server)
        if "InvalidAccessKeyId" not in str(err) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert str(err) == ACCESS_DENIED.format(code="AccessDenied", endpoint=s3_server.endpoint)
    assert READER[1] not in str(err)
    boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=ACCESS_KEY,
                 aws_secret_access_key=SECRET, region_name="us-east-1",
                 ).list_objects_v2(Bucket=BUCKET)  # fmt: skip  # the admin still gets in


def test_s3_objects_carry_sha256_checksums(s3_uri: str, tmp_path: Path) -> None:
    import base64

    registry_uri = s3_uri
    store = open_store(registry_uri)
    pkg = make_package(tmp_path / "art", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    rev = publish_package(store, pkg).revision
    prefix = registry_uri.split("/", 3)[3]
    head = boto3.client("s3").head_object(
        Bucket=BUCKET, Key=f"{prefix}/{T}/r24-aaaa/{rev}/{ONNX}", ChecksumMode="ENABLED"
    )
    assert (
        head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha256_file(pkg / ONNX))).decode()
    )


def test_secrets_stay_out_of_logs_index_and_errors(
    s3_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG, logger="onceflow")
    store = open_store(s3_uri)
    publish_package(
        store, make_package(tmp_path / "art", T, "r24-aaaa", accuracy=0.8, latency_ms=1)
    )
    pull_model(store, T, tmp_path / "d", max_latency_ms=5)
    with pytest.raises(RegistryError) as err:
        pull_model(store, T, tmp_path / "e", max_latency_ms=0.1)
    texts = [caplog.text, str(err.value), _index_bytes(store).decode(), store.uri]
    texts += [p.read_text() for p in (tmp_path / "d").iterdir() if p.suffix in (".json", ".md")]
    assert caplog.text and all(SECRET not in t for t in texts)


def test_publish_stage_exits_75_naming_the_endpoint_when_s3_is_down(
    aws_env: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unreachable object store is transient (EX_TEMPFAIL, which the flows retry), not bad
    input (2): one line that names the endpoint, nothing written."""
    import socket

    import yaml

    from onceflow import stage
    from stages import publish

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    make_package(tmp_path / "artifacts", T, "r24-aaaa", accuracy=0.8, latency_ms=1.0)
    params = tmp_path / "params.yaml"
    publish_cfg = {"uri": "s3://onceflow-test/down", "endpoint_url": f"http://127.0.0.1:{port}",
                   "max_attempts": 2, "connect_timeout_s": 0.5}  # fmt: skip
    params.write_text(yaml.safe_dump({"publish": publish_cfg}))
    argv = ["--params", str(params), "--artifacts", str(tmp_path / "artifacts"),
            "--metrics", str(tmp_path / "metrics/publish.json")]  # fmt: skip
    assert stage.run(publish.main, argv) == 75
    err = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(err) == 1 and "\n" not in err[0]
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{port}" in err[0]
    assert "Traceback" not in err[0] and SECRET not in err[0]
    assert not (tmp_path / "metrics").exists()
