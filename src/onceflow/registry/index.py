"""The per-target index (``<target>/index.json``): what the registry holds and how to choose.

The index is the registry's single source of truth: a model exists once its entry is in the
index, and only then (files are uploaded before the index names them). Each entry summarizes a
package's manifest (accuracy, latencies) and pins the manifest's sha256, and the manifest pins
every other file, so a pull can verify everything it downloads from the index down.

Published model ids are immutable: an id names one ``model.onnx`` (its sha256 is the entry's
identity). Republishing the same ONNX under the same id changes nothing; a different ONNX under
an existing id is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from onceflow.errors import RegistryError
from onceflow.package.manifest import MANIFEST, ONNX, check_name

INDEX_FORMAT = 1


@dataclass(frozen=True)
class IndexEntry:
    model_id: str
    arch: str  # compact arch string
    test_accuracy: float  # top-1 on the test split, fraction in [0, 1]
    latency_ms: float  # measured on the target's backend (median)
    predicted_latency_ms: float | None  # from the latency estimator at search time
    budget_ms: float | None  # the search budget this model was selected for
    backend: str | None
    created_at: str | None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, size}

    @property
    def onnx_sha256(self) -> str:
        return str(self.files[ONNX]["sha256"])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> IndexEntry:
        try:
            entry = cls(
                model_id=check_name("model id", d["model_id"]),
                arch=str(d["arch"]),
                test_accuracy=float(d["test_accuracy"]),
                latency_ms=float(d["latency_ms"]),
                predicted_latency_ms=_opt_float(d.get("predicted_latency_ms")),
                budget_ms=_opt_float(d.get("budget_ms")),
                backend=d.get("backend"),
                created_at=d.get("created_at"),
                files={str(k): dict(v) for k, v in d["files"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RegistryError(
                f"index entry {d.get('model_id')!r} is malformed ({err!r})"
            ) from None
        if MANIFEST not in entry.files or ONNX not in entry.files:
            raise RegistryError(f"index entry {entry.model_id!r} lacks {MANIFEST} or {ONNX} hashes")
        return entry


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def entry_from_manifest(
    manifest: Mapping[str, Any], manifest_file: Mapping[str, Any]
) -> IndexEntry:
    """The index entry for a (validated) manifest; ``manifest_file`` is its own {sha256, size}."""
    lat = manifest["latency_ms"]
    return IndexEntry(
        model_id=manifest["model_id"],
        arch=str(manifest.get("arch", {}).get("string", "")),
        test_accuracy=float(manifest["test_accuracy"]),
        latency_ms=float(lat["measured"]),
        predicted_latency_ms=_opt_float(lat.get("predicted")),
        budget_ms=_opt_float(lat.get("budget")),
        backend=manifest.get("backend"),
        created_at=manifest.get("created_at"),
        files={**{k: dict(v) for k, v in manifest["files"].items()}, MANIFEST: dict(manifest_file)},
    )


def empty_index(target: str) -> dict[str, Any]:
    return {"format_version": INDEX_FORMAT, "target": target, "models": []}


def parse_index(data: bytes, target: str, source: str) -> list[IndexEntry]:
    """Entries of an index document; RegistryError if it is not one for ``target``."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RegistryError(f"{source}: not valid JSON; the index is corrupt") from None
    if not isinstance(doc, dict) or doc.get("format_version") != INDEX_FORMAT:
        raise RegistryError(f"{source}: not an onceflow index (format_version {INDEX_FORMAT})")
    if doc.get("target") != target:
        raise RegistryError(f"{source}: index is for target {doc.get('target')!r}, not {target!r}")
    return [IndexEntry.from_json(m) for m in doc.get("models", [])]


def render_index(target: str, entries: Iterable[IndexEntry]) -> bytes:
    """Deterministic bytes for an index: the same entries always give the same document."""
    doc = empty_index(target)
    doc["models"] = [e.to_json() for e in sorted(entries, key=lambda e: e.model_id)]
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def add_entry(entries: list[IndexEntry], new: IndexEntry) -> list[IndexEntry] | None:
    """Entries with ``new`` added, or None when it is already there (same id, same ONNX).

    A different ONNX under an existing id is a RegistryError: published ids are immutable.
    """
    for e in entries:
        if e.model_id == new.model_id:
            if e.onnx_sha256 == new.onnx_sha256:
                return None
            raise RegistryError(
                f"model id {new.model_id!r} is already published with a different {ONNX} "
                f"(sha256 {e.onnx_sha256[:12]}… vs {new.onnx_sha256[:12]}…); published models "
                "are immutable: pull the published one, or rebuild with a changed lineage "
                "(params, data, supernet) so the package gets a new id"
            )
    return [*entries, new]


def select(
    entries: list[IndexEntry],
    target: str,
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    model_id: str | None = None,
) -> IndexEntry:
    """The model to pull: ``model_id`` if given, else the most accurate within the budget.

    Ties go to the faster model. RegistryError explains what is available when nothing fits.
    """
    if not entries:
        raise RegistryError(f"target {target!r} has no published models")
    if model_id is not None:
        check_name("model id", model_id)
        match = [e for e in entries if e.model_id == model_id]
        if not match:
            raise RegistryError(
                f"model {model_id!r} is not in the registry for target {target!r}; "
                f"available: {', '.join(sorted(e.model_id for e in entries))}"
            )
        chosen = match[0]
        if max_latency_ms is not None and chosen.latency_ms > max_latency_ms:
            raise RegistryError(
                f"model {model_id!r} measures {chosen.latency_ms:.3f} ms on {target!r}, over the "
                f"--max-latency-ms budget of {max_latency_ms:g} ms"
            )
        if min_accuracy is not None and chosen.test_accuracy < min_accuracy:
            raise RegistryError(
                f"model {model_id!r} has test accuracy {chosen.test_accuracy:.4f}, below "
                f"--min-accuracy {min_accuracy:g}"
            )
        return chosen
    if max_latency_ms is None:
        raise RegistryError("give a latency budget (--max-latency-ms) or an explicit --model-id")
    fits = [
        e
        for e in entries
        if e.latency_ms <= max_latency_ms
        and (min_accuracy is None or e.test_accuracy >= min_accuracy)
    ]
    if not fits:
        fastest = min(entries, key=lambda e: (e.latency_ms, -e.test_accuracy))
        acc = f" and accuracy >= {min_accuracy:g}" if min_accuracy is not None else ""
        raise RegistryError(
            f"no model for target {target!r} within {max_latency_ms:g} ms{acc}; the fastest "
            f"available is {fastest.model_id} at {fastest.latency_ms:.3f} ms "
            f"(test accuracy {fastest.test_accuracy:.4f})"
        )
    return max(fits, key=lambda e: (e.test_accuracy, -e.latency_ms, e.model_id))
