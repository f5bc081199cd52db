"""``s3://bucket/prefix`` registry through boto3 (AWS S3, MinIO, any S3-compatible endpoint).

Credentials and the endpoint come from the standard AWS chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, profiles, instance roles; ``AWS_ENDPOINT_URL(_S3)`` for MinIO).
Transient errors (throttling, 5xx, dropped connections) are retried by botocore's standard
retry mode with exponential backoff. Every upload carries a SHA-256 checksum that S3 verifies
on receipt, and the hex digest as ``x-amz-meta-sha256`` so a republish can skip identical
objects. Index writes are conditional: ``If-None-Match: *`` to create, ``If-Match: <etag>`` to
replace. Error messages name the bucket, key and endpoint, never credentials.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from onceflow.errors import RegistryError, StoreUnreachable
from onceflow.io import sha256_bytes, sha256_chunks
from onceflow.package.manifest import NAME_RE
from onceflow.registry.base import INDEX, IndexConflict, StoreOptions
from onceflow.uri import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

_MISSING = {"404", "NoSuchKey", "NotFound"}
_CONFLICT = {"412", "PreconditionFailed", "409", "ConditionalRequestConflict"}


def _b64(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


class S3Store:
    """A registry under ``s3://<bucket>/<prefix>``."""

    def __init__(self, bucket: str, prefix: str, options: StoreOptions) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self.options = options
        config = Config(
            retries={"total_max_attempts": max(1, options.max_attempts), "mode": "standard"},
            connect_timeout=options.connect_timeout_s,
            read_timeout=options.read_timeout_s,
            region_name=options.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=options.endpoint_url, config=config
        )
        self.endpoint = redact(str(self.client.meta.endpoint_url)).split("?")[0]

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """Run one S3 request; translate failures into RegistryError / IndexConflict."""
        where = f"s3://{self.bucket}/{self._key(key)}" if key else f"s3://{self.bucket}"
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            info = err.response.get("Error", {})
            code = str(info.get("Code", "?"))
            status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
            if code in _CONFLICT or status in _CONFLICT:
                raise IndexConflict(key) from None
            if code in _MISSING or status == "404":
                if code == "NoSuchBucket":
                    raise RegistryError(
                        f"{what} {where}: bucket {self.bucket!r} does not exist at {self.endpoint} "
                        "(create it, or check the registry URI and AWS_ENDPOINT_URL)"
                    ) from None
                raise FileNotFoundError(key) from None
            if code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}:
                raise RegistryError(
                    f"{what} {where}: access denied ({code}) at {self.endpoint}; check the AWS "
                    "credentials (env, profile or role) and the bucket policy"
                ) from None
            raise RegistryError(
                f"{what} {where}: S3 error {code} (HTTP {status}) at {self.endpoint}"
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise RegistryError(
                f"{what} {where}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role)"
            ) from None
        except (BotoConnectionError, HTTPClientError) as err:
            raise StoreUnreachable(
                f"{what} {where}: cannot reach the S3 endpoint {self.endpoint} after "
                f"{self.options.max_attempts} attempt(s) ({type(err).__name__}); check "
                "AWS_ENDPOINT_URL / publish.endpoint_url and the network"
            ) from None
        except BotoCoreError as err:
            raise RegistryError(f"{what} {where}: {redact(str(err))}") from None

    def read(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = self._call("read", key, self.client.get_object, Key=self._key(key))
            data = resp["Body"].read()
        except FileNotFoundError:
            return None
        except BotoCoreError as err:  # the body stream broke after the response started
            raise RegistryError(f"read {self.uri}/{key}: {type(err).__name__}; retry") from None
        return data, resp["ETag"]

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Key=self._key(key))
        except FileNotFoundError:
            return False
        return True

    def stored_sha256(self, key: str) -> str | None:
        """Hash what S3 really holds (streamed); metadata or checksums could have been faked."""
        try:
            resp = self._call("read", key, self.client.get_object, Key=self._key(key))
        except FileNotFoundError:
            return None
        try:
            return sha256_chunks(resp["Body"].iter_chunks(1 << 20))
        except BotoCoreError as err:
            raise RegistryError(f"read {self.uri}/{key}: {type(err).__name__}; retry") from None

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        with open(path, "rb") as body:
            self._call(
                "upload",
                key,
                self.client.put_object,
                Key=self._key(key),
                Body=body,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(sha256),
                Metadata={"sha256": sha256},
            )

    def put_if(self, key: str, data: bytes, token: str | None) -> None:
        sha = sha256_bytes(data)
        cond = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        self._call(
            "write",
            key,
            self.client.put_object,
            Key=self._key(key),
            Body=data,
            ContentType="application/json",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(sha),
            Metadata={"sha256": sha},
            **cond,
        )

    def download(self, key: str, dest: Path) -> None:
        try:
            resp = self._call("download", key, self.client.get_object, Key=self._key(key))
        except FileNotFoundError:
            raise RegistryError(f"{self.uri}/{key}: not found in the registry") from None
        try:
            with open(dest, "wb") as out:
                for chunk in resp["Body"].iter_chunks(1 << 20):
                    out.write(chunk)
        except BotoCoreError as err:
            raise RegistryError(f"download {self.uri}/{key}: {type(err).__name__}; retry") from None

    def list_dirs(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        token: dict[str, str] = {}
        while True:
            resp = self._call(
                "list", "", self.client.list_objects_v2, Prefix=base, Delimiter="/", **token
            )
            for cp in resp.get("CommonPrefixes", []):
                names.append(cp["Prefix"][len(base) :].rstrip("/"))
            if not resp.get("IsTruncated"):
                break
            token = {"ContinuationToken": resp["NextContinuationToken"]}
        names = [n for n in names if NAME_RE.match(n)]
        return sorted(n for n in names if self.exists(f"{n}/{INDEX}"))
