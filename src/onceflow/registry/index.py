"""The per-target index (``<target>/index.json``): what the registry holds and how to choose.

The index is the registry's single source of truth: a model revision exists once its entry is
in the index, and only then (its objects are uploaded before the index names them). Each entry
summarizes a package's manifest (accuracy, latencies) and pins the manifest's sha256, and the
manifest pins every other file, so a pull can verify everything it downloads from the index down.

Revisions are immutable. A revision is named by its manifest's content (the first 16 hex digits
of its sha256) and its objects live under ``<target>/<model-id>/<revision>/``, so two publishers
can never overwrite each other's objects. Publishing a model id again with another manifest
(e.g. the latency measured again) appends a new revision; the index keeps the history in
publish order and the newest revision of a model is the one listed and pulled by default.

Format 1 indexes (one entry per model, files directly under ``<target>/<model-id>/``) are read
as revision-less entries and upgraded to format 2 by the next publish; their objects stay put.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from onceflow import artifacts
from onceflow.errors import RegistryError
from onceflow.package.manifest import MANIFEST, ONNX, check_name
from onceflow.registry.store import check_revision

INDEX_FORMAT = 2
READABLE_FORMATS = (1, 2)
REVISION_DIGITS = 16


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
    revision: str | None = None  # manifest sha256 prefix; None: a format-1 entry (no revision dir)

    @property
    def onnx_sha256(self) -> str:
        return str(self.files[ONNX]["sha256"])

    @property
    def manifest_sha256(self) -> str:
        return str(self.files[MANIFEST]["sha256"])

    @property
    def label(self) -> str:
        """``model-id@revision`` (or the bare id for a format-1 entry)."""
        return self.model_id if self.revision is None else f"{self.model_id}@{self.revision}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any, source: str) -> IndexEntry:
        if not isinstance(d, Mapping):
            raise RegistryError(f"{source}: an entry of 'models' is not an object; index corrupt")
        mid = d.get("model_id")
        try:
            entry = cls(
                model_id=check_name("model id", mid),
                arch=str(d["arch"]),
                test_accuracy=_finite(d["test_accuracy"]),
                latency_ms=_finite(d["latency_ms"]),
                predicted_latency_ms=_opt_float(d.get("predicted_latency_ms")),
                budget_ms=_opt_float(d.get("budget_ms")),
                backend=_opt_str(d.get("backend")),
                created_at=_opt_str(d.get("created_at")),
                files={str(k): _file_rec(v) for k, v in d["files"].items()},
                revision=None if d.get("revision") is None else check_revision(d["revision"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RegistryError(
                f"{source}: entry {mid!r} is malformed ({type(err).__name__}: {err}); the index "
                "is corrupt -- republish the model (`onceflow publish`) or restore index.json"
            ) from None
        if MANIFEST not in entry.files or ONNX not in entry.files:
            raise RegistryError(
                f"{source}: entry {entry.model_id!r} lacks {MANIFEST} or {ONNX} hashes; the "
                "index is corrupt"
            )
        return entry


def _finite(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"expected a finite number >= 0, got {v!r}")
    return float(v)


def _opt_float(v: Any) -> float | None:
    return None if v is None else _finite(v)


def _opt_str(v: Any) -> str | None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _file_rec(v: Any) -> dict[str, Any]:
    sha, size = v["sha256"], v["size"]
    if not isinstance(sha, str) or len(sha) != 64 or not isinstance(size, int) or size < 0:
        raise ValueError("a file record must be {sha256: 64 hex chars, size: bytes}")
    return {"sha256": sha, "size": size}


def revision_of(manifest_sha256: str) -> str:
    """The revision id of a package: derived from its manifest's content."""
    return manifest_sha256[:REVISION_DIGITS]


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
        revision=revision_of(str(manifest_file["sha256"])),
    )


def empty_index(target: str) -> dict[str, Any]:
    return {"format_version": INDEX_FORMAT, "target": target, "models": []}


def parse_index(data: bytes, target: str, source: str) -> list[IndexEntry]:
    """Entries of an index document, oldest first; RegistryError if it is not one for ``target``."""
    doc = artifacts.registry_index(data, source, RegistryError)  # JSON-level damage: one line
    if "format_version" not in doc:
        raise RegistryError(f"{source}: not an onceflow index (no format_version)")
    version = doc["format_version"]
    if version not in READABLE_FORMATS:
        raise RegistryError(
            f"{source}: index format_version {version!r} is not one this onceflow reads "
            f"({', '.join(map(str, READABLE_FORMATS))}); upgrade onceflow to read this registry"
        )
    if doc.get("target") != target:
        raise RegistryError(
            f"{source}: index is for target {doc.get('target')!r}, not {target!r}; the index "
            "is misplaced or corrupt"
        )
    models = doc.get("models")
    if not isinstance(models, list):
        raise RegistryError(f"{source}: 'models' must be a list; the index is corrupt")
    entries = [IndexEntry.from_json(m, source) for m in models]
    if version == 1:
        entries = [replace(e, revision=None) for e in entries]
    seen: set[tuple[str, str | None]] = set()
    for e in entries:
        if (e.model_id, e.revision) in seen:
            raise RegistryError(f"{source}: {e.label} is listed twice; the index is corrupt")
        seen.add((e.model_id, e.revision))
    return entries


def render_index(target: str, entries: Iterable[IndexEntry]) -> bytes:
    """Deterministic bytes for an index (entries in publish order, oldest first)."""
    doc = empty_index(target)
    doc["models"] = [e.to_json() for e in entries]
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def find_revision(entries: list[IndexEntry], new: IndexEntry) -> IndexEntry | None:
    """The stored entry with the same model id and the same manifest bytes, if any."""
    for e in entries:
        if e.model_id == new.model_id and e.manifest_sha256 == new.manifest_sha256:
            return e
    return None


def add_revision(entries: list[IndexEntry], new: IndexEntry) -> list[IndexEntry] | None:
    """Entries with ``new`` appended as the newest revision, or None when it is already there."""
    return None if find_revision(entries, new) is not None else [*entries, new]


def latest(entries: list[IndexEntry]) -> list[IndexEntry]:
    """The newest revision of each model (the last one published), in first-publish order."""
    newest: dict[str, IndexEntry] = {}
    for e in entries:
        newest[e.model_id] = e
    return list(newest.values())


def _pick_revision(
    entries: list[IndexEntry], target: str, model_id: str | None, revision: str
) -> IndexEntry:
    if len(revision) < 4 or any(c not in "0123456789abcdef" for c in revision):
        raise RegistryError(f"invalid --revision {revision!r}: give 4-64 lower-case hex digits")
    match = [
        e
        for e in entries
        if e.revision is not None
        and e.revision.startswith(revision)
        and (model_id is None or e.model_id == model_id)
    ]
    if len(match) != 1:
        what = "no revision" if not match else f"{len(match)} revisions"
        known = ", ".join(e.label for e in entries if model_id in (None, e.model_id)) or "none"
        raise RegistryError(
            f"{what} of {model_id or 'any model'} on target {target!r} matches --revision "
            f"{revision!r}; known: {known}"
        )
    return match[0]


def select(
    entries: list[IndexEntry],
    target: str,
    *,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
    model_id: str | None = None,
    revision: str | None = None,
) -> IndexEntry:
    """The model to pull. Each model counts with its newest revision unless ``revision`` is given.

    - ``model_id`` (and/or ``revision``): exactly that model; the budgets are checked on it.
    - ``max_latency_ms``: the most accurate model within the budget (ties: the faster one);
      with ``min_accuracy`` too, only models at or above that accuracy count.
    - ``min_accuracy`` alone: the fastest model at or above that accuracy.
    RegistryError explains what is available when nothing fits.
    """
    if not entries:
        raise RegistryError(f"target {target!r} has no published models")
    if model_id is not None or revision is not None:
        if model_id is not None:
            check_name("model id", model_id)
            if not any(e.model_id == model_id for e in entries):
                raise RegistryError(
                    f"model {model_id!r} is not in the registry for target {target!r}; "
                    f"available: {', '.join(sorted({e.model_id for e in entries}))}"
                )
        if revision is not None:
            chosen = _pick_revision(entries, target, model_id, revision)
        else:
            chosen = latest([e for e in entries if e.model_id == model_id])[0]
        if max_latency_ms is not None and chosen.latency_ms > max_latency_ms:
            raise RegistryError(
                f"model {chosen.label} measures {chosen.latency_ms:.3f} ms on {target!r}, over "
                f"the --max-latency-ms budget of {max_latency_ms:g} ms"
            )
        if min_accuracy is not None and chosen.test_accuracy < min_accuracy:
            raise RegistryError(
                f"model {chosen.label} has test accuracy {chosen.test_accuracy:.4f}, below "
                f"--min-accuracy {min_accuracy:g}"
            )
        return chosen
    if max_latency_ms is None and min_accuracy is None:
        raise RegistryError(
            "say what to pull: a latency budget (--max-latency-ms), an accuracy floor "
            "(--min-accuracy), or an explicit --model-id"
        )
    current = latest(entries)
    fits = [
        e
        for e in current
        if (max_latency_ms is None or e.latency_ms <= max_latency_ms)
        and (min_accuracy is None or e.test_accuracy >= min_accuracy)
    ]
    if not fits:
        fastest = min(current, key=lambda e: (e.latency_ms, -e.test_accuracy))
        best = max(current, key=lambda e: (e.test_accuracy, -e.latency_ms))
        parts = []
        if max_latency_ms is not None:
            parts.append(f"within {max_latency_ms:g} ms")
        if min_accuracy is not None:
            parts.append(f"with accuracy >= {min_accuracy:g}")
        raise RegistryError(
            f"no model for target {target!r} {' and '.join(parts)}; the fastest available is "
            f"{fastest.model_id} at {fastest.latency_ms:.3f} ms (test accuracy "
            f"{fastest.test_accuracy:.4f}), the most accurate {best.model_id} at "
            f"{best.test_accuracy:.4f} ({best.latency_ms:.3f} ms)"
        )
    if max_latency_ms is None:  # an accuracy floor only: the fastest model that meets it
        return min(fits, key=lambda e: (e.latency_ms, -e.test_accuracy, e.model_id))
    return max(fits, key=lambda e: (e.test_accuracy, -e.latency_ms, e.model_id))
