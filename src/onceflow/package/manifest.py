"""What a deployable package is: its files, its manifest and its model id.

A package is a directory ``<model-id>/`` holding ``model.onnx`` (plus ``model.plan`` for
TensorRT targets), ``README.md`` (the model card) and ``manifest.json``. The manifest records the
sha256 and size of every other file, so a package (local or pulled from the registry) can be
verified byte for byte. This module is pure: no torch, safe to import from the registry and CLI.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onceflow import artifacts
from onceflow.errors import RegistryError
from onceflow.io import sha256_bytes, sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ONNX = "model.onnx"
PLAN = "model.plan"
CARD = "README.md"
PAYLOAD_FILES = (ONNX, PLAN, CARD)  # files a manifest may list (it never lists itself)
REQUIRED_FILES = (ONNX, CARD)

# Model ids, target names: lower-case, no separators that could escape a directory or key.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def file_entry(path: Path) -> dict[str, Any]:
    """The manifest record of one file: its sha256 and size in bytes."""
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def canonical_json(obj: Any) -> bytes:
    """A stable byte form of JSON data (sorted keys, no whitespace) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def model_id(arch_json: Mapping[str, Any], resolution: int, identity: Mapping[str, Any]) -> str:
    """Deterministic id of a packaged subnet: ``r<resolution>-<12 hex>``.

    ``identity`` holds what makes two packages of the same arch different models (the target,
    upstream artifact hashes, the params and code version that built it); the git commit and
    the creation time are deliberately not part of it, so rebuilding the same thing gives the
    same id.
    """
    digest = sha256_bytes(canonical_json({"arch": dict(arch_json), "identity": dict(identity)}))
    return f"r{int(resolution)}-{digest[:12]}"


def check_name(kind: str, value: str) -> str:
    """Validate a target name or model id (no path traversal, no odd characters)."""
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        raise RegistryError(
            f"invalid {kind} {value!r}: use 1-128 characters from a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit (no '..', no '/')"
        )
    return value


def validate_manifest(manifest: Any, source: str = MANIFEST) -> dict[str, Any]:
    """Check the fields the registry relies on; raise RegistryError naming the bad field."""

    def bad(field: str, why: str) -> RegistryError:
        return RegistryError(f"{source}: field {field!r} {why}")

    if not isinstance(manifest, dict):
        raise RegistryError(f"{source}: not a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise bad(
            "format_version", f"must be {FORMAT_VERSION}, got {manifest.get('format_version')!r}"
        )
    check_name("model id", manifest.get("model_id"))  # type: ignore[arg-type]
    check_name("target", manifest.get("target"))  # type: ignore[arg-type]
    acc = manifest.get("test_accuracy")
    if not isinstance(acc, int | float) or not 0.0 <= acc <= 1.0:
        raise bad("test_accuracy", f"must be a fraction in [0, 1], got {acc!r}")
    lat = manifest.get("latency_ms")
    if not isinstance(lat, dict) or not isinstance(lat.get("measured"), int | float):
        raise bad("latency_ms.measured", "must be a number (milliseconds)")
    pred, ratio = lat.get("predicted"), lat.get("ratio")
    if pred is not None and (not isinstance(pred, int | float) or pred < 0):
        raise bad("latency_ms.predicted", f"must be null or a number >= 0, got {pred!r}")
    if ratio is not None:  # optional: packages built before it was recorded lack it
        if not pred or not isinstance(ratio, int | float):
            raise bad("latency_ms.ratio", f"must be null without a prediction, got {ratio!r}")
        if not math.isclose(ratio, lat["measured"] / pred, rel_tol=1e-6):
            raise bad(
                "latency_ms.ratio",
                f"must be measured / predicted = {lat['measured'] / pred:.6g}, got {ratio!r}",
            )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise bad("files", "must map file names to {sha256, size}")
    for name in REQUIRED_FILES:
        if name not in files:
            raise bad("files", f"must list {name}")
    for name, rec in files.items():
        if name not in PAYLOAD_FILES:
            raise bad("files", f"lists {name!r}; allowed: {', '.join(PAYLOAD_FILES)}")
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("sha256"), str)
            or not _SHA_RE.match(rec["sha256"])
            or not isinstance(rec.get("size"), int)
            or rec["size"] < 0
        ):
            raise bad(f"files.{name}", "must be {sha256: 64 hex chars, size: bytes}")
    return manifest


def load_manifest(package_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``<package_dir>/manifest.json``."""
    path = Path(package_dir) / MANIFEST
    if not path.exists():
        raise RegistryError(
            f"{path}: no manifest (is this a package directory? a package's is made by "
            f"`dvc repro {artifacts.package_stage(path)}`)"
        )
    doc = artifacts.manifest_file(path, RegistryError)
    try:
        return validate_manifest(doc, str(path))
    except RegistryError as err:
        msg = str(err) if str(path) in str(err) else f"{path}: {err}"
        raise RegistryError(f"{msg}; {artifacts.rebuild(artifacts.package_stage(path))}") from None


def verify_files(package_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    """Check every file the manifest lists against its size and sha256; RegistryError if not."""
    root = Path(package_dir)
    for name, rec in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise RegistryError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != rec["size"]:
            raise RegistryError(f"{path}: size {size} bytes, manifest says {rec['size']}")
        digest = sha256_file(path)
        if digest != rec["sha256"]:
            raise RegistryError(
                f"{path}: sha256 {digest[:16]}… does not match the manifest ({rec['sha256'][:16]}…)"
            )


def write_manifest(package_dir: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Record sha256 + size of the payload files present in ``package_dir`` and write the
    manifest there (atomically). Returns the complete, validated manifest."""
    from onceflow.io import write_json_atomic

    root = Path(package_dir)
    full = dict(manifest)
    full["files"] = {n: file_entry(root / n) for n in PAYLOAD_FILES if (root / n).is_file()}
    validate_manifest(full, str(root / MANIFEST))
    write_json_atomic(root / MANIFEST, full)
    return full
