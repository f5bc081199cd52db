"""One source of defaults: the pydantic schema in src/onceflow/config.py.

params.yaml spells every key out (with a comment) for the reader, so each value it sets must be
the schema default -- or a deliberate override listed, with its reason, in DELIBERATE_OVERRIDES
below (the one place). And no library dataclass may carry a default of its own that disagrees
with the schema field of the same name.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Iterable, Iterator
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

import onceflow
from onceflow import config
from onceflow.config import Params, load_params
from tests.conftest import REPO_ROOT

# params.yaml key path -> why it differs from (or, for data, does not follow) the schema default.
DELIBERATE_OVERRIDES: dict[str, str] = {
    "train.processes": "2 single-thread ranks suit the default 2-core run; the library default "
    "is one process (torchrun or a profile sets more)",
    "latency.targets": "the targets a run specializes for are data chosen here; the schema "
    "default is one ONNX Runtime CPU target",
}


def _plain(value: Any) -> Any:
    """A comparable form: models as dicts, tuples as lists."""
    if isinstance(value, BaseModel):
        return _plain(value.model_dump())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _walk(raw: dict, value: BaseModel, default: BaseModel, path: str) -> Iterator[tuple]:
    """(key path, value params.yaml sets, schema default) for every leaf params.yaml sets."""
    for key, raw_v in raw.items():
        p = f"{path}.{key}" if path else key
        v, d = getattr(value, key), getattr(default, key)
        if isinstance(raw_v, dict) and isinstance(v, BaseModel) and isinstance(d, BaseModel):
            yield from _walk(raw_v, v, d, p)
        else:
            yield p, v, d


def params_yaml_drift(raw: dict, overrides: Iterable[str]) -> list[str]:
    """Keys params.yaml sets to something other than the schema default, not in overrides."""
    params = config.parse_params(raw)
    skip = set(overrides)
    return [
        f"{p}: params.yaml {_plain(v)!r} != schema default {_plain(d)!r}"
        for p, v, d in _walk(raw, params, Params(), "")
        if not any(p == o or p.startswith(o + ".") for o in skip) and _plain(v) != _plain(d)
    ]


def _has_path(raw: dict, path: str) -> bool:
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_params_yaml_sets_schema_defaults_or_listed_overrides() -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    load_params(REPO_ROOT / "params.yaml")  # valid
    drift = params_yaml_drift(raw, DELIBERATE_OVERRIDES)
    assert not drift, (
        "make the schema default in src/onceflow/config.py equal params.yaml, or list the key "
        f"in DELIBERATE_OVERRIDES with the reason: {drift}"
    )
    stale = [p for p in DELIBERATE_OVERRIDES if not _has_path(raw, p)]
    assert not stale, f"DELIBERATE_OVERRIDES names keys params.yaml does not set: {stale}"


def test_drift_is_detected() -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["supernet"]["head_channels"] = 7
    raw["latency"]["protocol"]["repeats"] = 300
    assert params_yaml_drift(raw, DELIBERATE_OVERRIDES) == [
        "supernet.head_channels: params.yaml 7 != schema default 192",
        "latency.protocol.repeats: params.yaml 300 != schema default 150",
    ]


def _schema_defaults() -> dict[str, list[tuple[str, Any]]]:
    """Field name -> [(model, default)] over every config model (leaf fields with a default)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for name, model in vars(config).items():
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            continue
        if model.__module__ != config.__name__:
            continue
        for field, info in model.model_fields.items():
            if info.default_factory is not None:
                default = info.default_factory()  # type: ignore[call-arg]
            elif info.default is PydanticUndefined:
                continue
            else:
                default = info.default
            if isinstance(default, BaseModel | dict):
                continue  # a whole section (or map of them) is a container, not a leaf default
            out.setdefault(field, []).append((name, _plain(default)))
    return out


def _library_dataclasses() -> Iterator[type]:
    for mod in pkgutil.walk_packages(onceflow.__path__, "onceflow."):
        module = importlib.import_module(mod.name)
        for obj in vars(module).values():
            is_class = dataclasses.is_dataclass(obj) and isinstance(obj, type)
            if is_class and obj.__module__ == mod.name:
                yield obj


def disagreeing_defaults(classes: Iterable[type]) -> list[str]:
    """Dataclass fields named like a schema field whose own default matches no schema default
    of that name (a second, drifting copy of a default)."""
    schema = _schema_defaults()
    bad = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name not in schema:
                continue
            if f.default is not dataclasses.MISSING:
                mine = f.default
            elif f.default_factory is not dataclasses.MISSING:
                mine = f.default_factory()
            else:
                continue
            if where := _disagreement(f.name, mine, schema):
                bad.append(f"{cls.__module__}.{cls.__qualname__}.{f.name}={mine!r} ({where})")
    return bad


def _disagreement(name: str, value: Any, schema: dict[str, list[tuple[str, Any]]]) -> str:
    """The schema's defaults of ``name`` (``Model.name=default, ...``) when ``value`` matches
    none of them; else ''."""
    if any(_plain(value) == d for _, d in schema[name]):
        return ""
    return ", ".join(f"{m}.{name}={d!r}" for m, d in schema[name])


def test_no_library_dataclass_disagrees_with_the_schema() -> None:
    classes = list(_library_dataclasses())
    assert len(classes) > 20  # the walk found the library
    bad = disagreeing_defaults(classes)
    assert not bad, f"take the validated config section instead of restating defaults: {bad}"


def test_a_drifting_dataclass_default_is_detected() -> None:
    @dataclasses.dataclass(frozen=True)
    class OldMeasureProtocol:  # the copy this test was written against
        warmup: int = 10
        repeats: int = 300
        sessions: int = 1

    bad = disagreeing_defaults([OldMeasureProtocol])
    assert len(bad) == 2
    assert "OldMeasureProtocol.repeats=300 (MeasureProtocolConfig.repeats=150)" in bad[0]
    assert "OldMeasureProtocol.sessions=1 (MeasureProtocolConfig.sessions=3)" in bad[1]


# Parameters named like a schema field that mean something else: "module.function.param", or a
# bare parameter name for a clash everywhere -> why.
SIGNATURE_NAME_CLASHES: dict[str, str] = {
    "source": "the file a loader names in its errors, not data.source",
    "path": "a file path, not data.path",
    "onceflow.orchestration.pools.wait_for_pool_run.clock": "a clock function, not a name",
    "onceflow.package.parity.check_parity.batch_size": "an inference batch, not a training one",
    "onceflow.predictor.dataset.SubnetMeter.measure.retest": "a flag; the schema's is a count",
    "onceflow.predictor.dataset.MeterPool.measure.retest": "a flag; the schema's is a count",
    "onceflow.progress.Progress.__init__.unit": "a progress unit, not a budget unit",
    "onceflow.progress.track.unit": "a progress unit, not a budget unit",
    "onceflow.search.bounds.default_starts.n_random": "random search starts, not sandwich subnets",
    "onceflow.search.bounds.check_budget.unit": "the unit of a resolved budget (ms)",
    "onceflow.search.evolution.random_search.feasible_only": "the plain baseline samples all",
    "onceflow.search.specialize.specialize.extra_objectives": "() is the schema's [] as a tuple",
    "onceflow.train.distributed.init_distributed.backend": "a torch.distributed backend",
}


def _library_functions() -> Iterator[tuple[str, Any]]:
    """(dotted name, function) for every function and method defined in the library."""
    for mod in pkgutil.walk_packages(onceflow.__path__, "onceflow."):
        module = importlib.import_module(mod.name)
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != mod.name:
                continue
            if inspect.isfunction(obj):
                yield f"{mod.name}.{obj.__qualname__}", obj
            elif inspect.isclass(obj):
                for attr in vars(obj).values():
                    fn = attr.__func__ if isinstance(attr, classmethod | staticmethod) else attr
                    if inspect.isfunction(fn):
                        yield f"{mod.name}.{fn.__qualname__}", fn


def disagreeing_signature_defaults(
    functions: Iterable[tuple[str, Any]], clashes: Iterable[str] = ()
) -> list[str]:
    """Parameters named like a schema field whose default matches no schema default of that
    name: a restated default that drifted (``random_samples=10_000`` vs the schema's 20,000)."""
    schema, skip, bad = _schema_defaults(), set(clashes), []
    for name, fn in functions:
        for p in inspect.signature(fn).parameters.values():
            if p.name not in schema or p.default in (inspect.Parameter.empty, None):
                continue
            if p.name in skip or f"{name}.{p.name}" in skip:
                continue
            if where := _disagreement(p.name, p.default, schema):
                bad.append(f"{name}({p.name}={p.default!r}) ({where})")
    return bad


def test_no_function_default_disagrees_with_the_schema() -> None:
    functions = list(_library_functions())
    assert len(functions) > 300  # the walk found the library
    bad = disagreeing_signature_defaults(functions, SIGNATURE_NAME_CLASHES)
    assert not bad, (
        "pass the validated config section (or its field) instead of restating a default, or "
        f"list a true name clash in SIGNATURE_NAME_CLASHES with the reason: {bad}"
    )
    names = {n for n, _ in functions}
    stale = [c for c in SIGNATURE_NAME_CLASHES if "." in c and c.rpartition(".")[0] not in names]
    assert not stale, f"SIGNATURE_NAME_CLASHES names functions that no longer exist: {stale}"


def test_a_drifting_signature_default_is_detected() -> None:
    def specialize(space: object, random_samples: int = 10_000, seed: int = 0) -> None:
        """The drift issue #27 found: the schema says 20,000."""

    bad = disagreeing_signature_defaults([("old.specialize", specialize)])
    assert bad == ["old.specialize(random_samples=10000) (SearchConfig.random_samples=20000)"]
