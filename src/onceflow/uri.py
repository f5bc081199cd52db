"""Registry URIs and endpoint URLs: syntax checks and the one redaction used wherever one is shown.

A leaf module (standard library only) so that ``config`` can validate ``publish.uri`` without
importing the registry. Credentials never belong in a URI: they come from the AWS chain (env,
profile, instance role). A URI that holds user-info or a query string is refused, and every
message shows it through :func:`redact`, which also masks secrets in free text (URL user-info
anywhere, query strings, ``key=value`` secrets, AWS access key ids, the AWS secret env vars).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

SCHEMES = ("file", "s3")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$"
)
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

# user-info: "id:secret@" anywhere, or "id@" right after a scheme ("s3://AKIA...@bucket")
_USERINFO = re.compile(r"[^\s/@'\"()\[\]<>,;:]+:[^\s/@'\"()\[\]<>,;]*@|(?<=://)[^\s/@'\"]+@")
# "scheme://id:secret/..." without an '@' (the colon is not followed by a port number)
_AUTH_COLON = re.compile(r"(\w+://)[^/\s'\"@:]*:(?![0-9]{1,5}(?:[/\s'\"]|$))[^/\s'\"]+")
# the query string and fragment of anything URL-like
_QUERY = re.compile(r"(\w+://[^\s'\"?#]*)[?#][^\s'\"]*")
# key=value secrets in free text (presigned URLs, connection strings)
_KV_SECRET = re.compile(
    r"(?i)\b([\w-]*(?:secret|token|passw(?:or)?d|pwd|signature|credential|access[_-]?key)"
    r"[\w-]*)(\s*[=:]\s*)([^\s&'\",;]+)"
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b")


class URIError(ValueError):
    """A registry URI or endpoint URL is malformed; the message is already redacted."""


def redact(text: str) -> str:
    """``text`` with anything that could be a credential replaced by ``***``."""
    text = str(text)
    for var in _SECRET_ENV:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _QUERY.sub(r"\1?***", text)
    text = _USERINFO.sub("***@", text)
    text = _AUTH_COLON.sub(r"\1***", text)
    text = _KV_SECRET.sub(r"\1\2***", text)
    return _AWS_KEY_ID.sub("***", text)


@dataclass(frozen=True)
class RegistryURI:
    """A checked registry URI: ``file://<dir>`` or ``s3://<bucket>[/<prefix>]``."""

    scheme: str  # "file" or "s3"
    location: str  # the directory (file) or the bucket (s3)
    prefix: str  # key prefix inside the bucket ("" for file://)

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.location}"
        return f"s3://{self.location}/{self.prefix}".rstrip("/")


def parse_registry_uri(uri: object) -> RegistryURI:
    """Split and check a registry URI; URIError (redacted, one line) when it is not one.

    ``file://registry`` -> a directory, relative unless absolute (``file:///srv/registry``);
    ``s3://bucket/a/b`` -> bucket ``bucket``, prefix ``a/b``.
    """
    shown = redact(str(uri))
    if not isinstance(uri, str) or "://" not in uri:
        raise URIError(f"registry URI {shown!r}: expected file://<dir> or s3://<bucket>[/<prefix>]")
    scheme, rest = uri.split("://", 1)
    if scheme not in SCHEMES:
        raise URIError(
            f"registry URI {shown!r}: unsupported scheme {redact(scheme)!r} (use file:// or s3://)"
        )
    authority = rest.split("/", 1)[0]
    if "@" in (authority if scheme == "file" else rest):
        raise URIError(
            f"registry URI {shown!r}: credentials do not belong in the URI; use "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
        )
    if "?" in rest or "#" in rest:
        raise URIError(
            f"registry URI {shown!r}: query strings and fragments are not allowed "
            "(credentials and options come from the environment or params)"
        )
    if any(ord(c) < 32 or c == "\x7f" for c in rest):
        raise URIError(f"registry URI {shown!r}: control characters are not allowed")
    if scheme == "file":
        if not rest:
            raise URIError(
                f"registry URI {shown!r}: file:// needs a directory, e.g. file://registry"
            )
        return RegistryURI("file", rest, "")
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise URIError(
            f"registry URI {shown!r}: the bucket name is not valid (3-63 characters from a-z, "
            "0-9, '.', '-', starting and ending with a letter or digit)"
        )
    for part in prefix.split("/") if prefix else ():
        if not _PREFIX_PART_RE.match(part):
            raise URIError(
                f"registry URI {shown!r}: a prefix part is not allowed (letters, digits, '.', "
                "'_', '-'; no empty parts, no '..')"
            )
    return RegistryURI("s3", bucket, prefix)


def check_endpoint_url(url: object) -> str:
    """An S3 endpoint URL ``http(s)://host[:port][/path]``; URIError (redacted) otherwise."""
    shown = redact(str(url))
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise URIError(
            f"endpoint URL {shown!r}: expected an http:// or https:// URL, e.g. "
            "http://127.0.0.1:9000"
        )
    rest = url.split("://", 1)[1]
    authority = rest.split("/", 1)[0]
    if "@" in rest:
        raise URIError(
            f"endpoint URL {shown!r}: credentials do not belong in the URL; use "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    if "?" in rest or "#" in rest or not _HOST_RE.match(authority):
        raise URIError(f"endpoint URL {shown!r}: expected http(s)://host[:port] (no query string)")
    return url
