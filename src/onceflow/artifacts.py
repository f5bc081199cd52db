"""Checked reads of the artifacts stages hand each other: one loader per kind.

Every JSON artifact a stage reads goes through :func:`read_json_artifact`: a missing, empty,
truncated, non-UTF-8, non-finite (``NaN``, ``Infinity``, ``1e999``), pathologically nested or
wrongly typed file is one :class:`ArtifactError` line (exit code 2) naming the file, what is
wrong and the stage that makes it (``dvc repro <stage>`` rebuilds it), before the stage writes
anything. The loaders below name the kind and its stage; the kind's own reader (``Meta``,
``SearchSpace``, ``Lut``, ...) then checks the fields and raises errors of the same form.

| kind | file | made by |
|---|---|---|
| prepared data meta | ``data/prepared/meta.json`` | ``prepare`` |
| supernet config | ``models/supernet/space.json`` | ``train_supernet`` |
| latency table files | ``latency/<T>/{lut,estimator,validation}.json`` | ``latency_table@<T>`` |
| predictor model | ``models/predictor/predictor.json`` | ``predictor`` |
| search selections | ``search/<T>/selected.json`` | ``search@<T>`` |
| package manifests | ``artifacts/<T>/<id>/manifest.json`` | ``package@<T>`` |
| registry index | ``<registry>/<T>/index.json`` | ``onceflow publish`` (RegistryError) |
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from onceflow.errors import DataError, OnceflowError

# Deeper JSON than this is refused (our artifacts nest a few levels; a hostile file that nests
# thousands deep would otherwise exhaust the parser's recursion).
MAX_DEPTH = 64
# Larger files are refused before they are read (the largest real one, a LUT, is ~1 MB).
MAX_BYTES = 256 << 20


class ArtifactError(DataError):
    """An input artifact is missing or corrupt: rebuild it with the stage that makes it."""


class _NonFinite(ValueError):
    pass


def rebuild(stage: str) -> str:
    """The fix for a broken artifact that ``stage`` makes."""
    return f"rebuild it with `dvc repro {stage}`"


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _too_deep(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests containers deeper than ``limit`` (iterative: no recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _type_name(doc: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(doc), "number" if isinstance(doc, int | float) else "null"
    )


def parse_json(
    data: bytes,
    source: str,
    fix: str,
    *,
    error: type[OnceflowError] = ArtifactError,
    expect: type | None = dict,
) -> Any:
    """Decode ``data`` (the bytes of ``source``) as strict JSON: UTF-8, finite numbers, at most
    :data:`MAX_DEPTH` levels, a top-level ``expect`` (None: any). Anything else raises
    ``error`` with one line: ``source``, what is wrong, ``fix``."""
    if not data.strip():
        raise error(f"{source}: empty (truncated?); {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{source}: not UTF-8 text (byte {err.start}); {fix}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except _NonFinite as err:
        raise error(f"{source}: malformed: non-finite number {err}; {fix}") from None
    except json.JSONDecodeError as err:
        raise error(
            f"{source}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno}: "
            f"truncated or damaged); {fix}"
        ) from None
    except RecursionError:
        raise error(f"{source}: nested deeper than {MAX_DEPTH} levels; {fix}") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise error(f"{source}: invalid number ({first}); {fix}") from None
    if _too_deep(doc, MAX_DEPTH):
        raise error(f"{source}: nested deeper than {MAX_DEPTH} levels; {fix}")
    if expect is not None and not isinstance(doc, expect):
        want = _type_name(expect())
        raise error(f"{source}: a JSON {_type_name(doc)} where an {want} belongs; {fix}")
    return doc


def read_json_artifact(
    path: str | os.PathLike[str],
    fix: str,
    *,
    error: type[OnceflowError] = ArtifactError,
    expect: type | None = dict,
) -> Any:
    """Read and :func:`parse_json` the file ``path``; a missing or unreadable file is ``error``
    too."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise error(f"{p}: a directory where a JSON file belongs; {fix}")
        if size > MAX_BYTES:
            raise error(f"{p}: {size} bytes, more than any artifact of ours ({MAX_BYTES}); {fix}")
        data = p.read_bytes()
    except FileNotFoundError:
        raise error(f"{p}: missing; {fix}") from None
    except OSError as err:
        raise error(f"{p}: unreadable ({err.strerror or type(err).__name__}); {fix}") from None
    return parse_json(data, str(p), fix, error=error, expect=expect)


def field_error(path: str | os.PathLike[str], err: Exception, stage: str) -> ArtifactError:
    """A kind's reader failed on a field (KeyError, TypeError, ValueError, ...): one line."""
    text = " ".join(str(err).split())  # one line, whatever the reader's message held
    text = text if len(text) <= 300 else text[:297] + "..."
    what = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return ArtifactError(f"{path}: not the layout {stage} writes ({what}); {rebuild(stage)}")


# Per kind: the file and the stage that makes it ---------------------------------------------


def prepared_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``data/prepared/meta.json``."""
    return read_json_artifact(path, rebuild("prepare"))


def supernet_space(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``models/supernet/space.json``."""
    return read_json_artifact(path, rebuild("train_supernet"))


def latency_stage(path: str | os.PathLike[str]) -> str:
    """``latency_table@<T>`` for a file in ``latency/<T>/``."""
    return f"latency_table@{Path(path).parent.name}"


def latency_file(path: str | os.PathLike[str], expect: type = dict) -> Any:
    """``latency/<T>/{lut,estimator}.json`` (objects), ``validation.json`` (a list)."""
    return read_json_artifact(path, rebuild(latency_stage(path)), expect=expect)


def latency_validation(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """``latency/<T>/validation.json``: the measured subnets, a list of records with ``role``,
    ``arch`` (strings) and ``measured_ms`` (a number >= 0)."""
    records = latency_file(path, expect=list)
    for i, r in enumerate(records):
        ok = (
            isinstance(r, dict)
            and isinstance(r.get("role"), str)
            and isinstance(r.get("arch"), str)
        )
        ms = r.get("measured_ms") if ok else None
        if not (isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0):
            raise ArtifactError(
                f"{path}: record {i} is not {{role, arch, measured_ms >= 0}}; "
                f"{rebuild(latency_stage(path))}"
            )
    return records


def predictor_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``models/predictor/predictor.json``."""
    return read_json_artifact(path, rebuild("predictor"))


def selection(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``search/<T>/selected.json``: an object whose ``selected`` is a non-empty list of
    objects, each with an arch (``arch_json`` object or ``arch`` string/object) and a
    ``budget_ms`` (a number or null)."""
    stage = f"search@{Path(path).parent.name}"
    doc = read_json_artifact(path, rebuild(stage))
    entries = doc.get("selected")
    if not isinstance(entries, list) or not entries:
        raise ArtifactError(f"{path}: 'selected' is not a non-empty list; {rebuild(stage)}")
    for i, e in enumerate(entries):
        arch = e.get("arch_json", e.get("arch")) if isinstance(e, dict) else None
        budget = e.get("budget_ms") if isinstance(e, dict) else None
        if not isinstance(arch, dict | str) or not (
            budget is None or (isinstance(budget, int | float) and not isinstance(budget, bool))
        ):
            raise ArtifactError(
                f"{path}: selected[{i}] is not {{arch_json or arch, budget_ms}}; {rebuild(stage)}"
            )
    return doc


def package_stage(path: str | os.PathLike[str]) -> str:
    """``package@<T>`` for ``artifacts/<T>/<id>/manifest.json``."""
    return f"package@{Path(path).parent.parent.name}"


def manifest_file(path: str | os.PathLike[str], error: type[OnceflowError]) -> dict[str, Any]:
    """``artifacts/<T>/<id>/manifest.json`` (fields: :func:`onceflow.package.manifest.
    validate_manifest`)."""
    return read_json_artifact(path, rebuild(package_stage(path)), error=error)


REPUBLISH = "restore it from a backup or republish the packages (`onceflow publish`)"


def registry_index(data: bytes, source: str, error: type[OnceflowError]) -> dict[str, Any]:
    """A registry's ``<T>/index.json`` (bytes from the store)."""
    return parse_json(data, source, f"the index is corrupt; {REPUBLISH}", error=error)
