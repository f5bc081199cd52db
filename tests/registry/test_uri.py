"""onceflow.uri: registry URI syntax and the one redaction used wherever a URI is shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from onceflow.config import parse_params
from onceflow.errors import ConfigError
from onceflow.uri import URIError, check_endpoint_url, parse_registry_uri, redact

LEAKS = ("secretsecret", "hunter2", "AKIAXXXX", "AKIAIOSFODNN7EXAMPLE", "sig123")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("s3://AKIAXXXX:secretsecret@bucket/p", "s3://***@bucket/p"),
        ("s3://AKIAXXXX@bucket/p", "s3://***@bucket/p"),
        ("bucket 'AKIAXXXX:secretsecret@bucket' is bad", "bucket '***@bucket' is bad"),
        ("s3://AKIAXXXX:secretsecret/bucket", "s3://***/bucket"),
        ("s3://bucket/p/u:hunter2@x", "s3://bucket/p/***@x"),
        ("https://h/x?X-Amz-Credential=AKIAXXXX&X-Amz-Signature=sig123", "https://h/x?***"),
        ("password=hunter2, token: sig123", "password=***, token: ***"),
        ("key id AKIAIOSFODNN7EXAMPLE in text", "key id *** in text"),
        # what must survive: endpoints with ports, model labels, plain messages
        ("at http://127.0.0.1:9000/x", "at http://127.0.0.1:9000/x"),
        ("known: r24-aaaa@59732026f9fe0004", "known: r24-aaaa@59732026f9fe0004"),
        ("s3://bucket-x: bucket 'bucket-x' does not exist", "s3://bucket-x: bucket 'bucket-x' "
         "does not exist"),
        ("set AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
         "set AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"),
    ],
)  # fmt: skip
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_redact_masks_the_environment_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "plain-looking-value")
    assert redact("boto said plain-looking-value") == "boto said ***"


@pytest.mark.parametrize(
    ("uri", "word"),
    [
        ("s3://AKIAXXXX:secretsecret@bucket/p", "credentials"),
        ("s3://AKIAXXXX:secretsecret/bucket", "bucket name"),
        ("s3://bucket/p?X-Amz-Signature=sig123", "query"),
        ("file://u:hunter2@host/reg", "credentials"),
        ("s3://bucket/a//b", "prefix part"),
        ("s3://bucket/a/../b", "prefix part"),
        ("gs://bucket", "unsupported scheme"),
        ("file://", "needs a directory"),
        ("file://reg\nx", "control characters"),
        ("registry", "expected file://"),
    ],
)
def test_bad_registry_uris(uri: object, word: str) -> None:
    with pytest.raises(URIError) as err:
        parse_registry_uri(uri)
    assert word in str(err.value) and not any(s in str(err.value) for s in LEAKS)
    with pytest.raises(ConfigError) as cfg:  # the same check, found at config time
        parse_params({"publish": {"uri": uri}})
    assert word in str(cfg.value) and not any(s in str(cfg.value) for s in LEAKS)


def test_good_uris_and_endpoints() -> None:
    assert str(parse_registry_uri("s3://bucket/a/b/")) == "s3://bucket/a/b"
    assert parse_registry_uri("file:///srv/reg").location == "/srv/reg"
    assert parse_registry_uri("file://regs/v@2").location == "regs/v@2"  # "@" inside a path
    assert check_endpoint_url("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    for bad in ("http://u:hunter2@h:9", "ftp://h", "http://h/?sig=sig123", "http://"):
        with pytest.raises(URIError) as err:
            check_endpoint_url(bad)
        assert not any(s in str(err.value) for s in LEAKS)


def test_config_and_search_do_not_import_the_registry() -> None:
    code = (
        "import sys, onceflow.config, onceflow.search\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('onceflow.registry', "
        "'onceflow.package', 'boto3')))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
