"""Random mutations of the repo's valid params.yaml: the loader accepts the file or raises
ConfigError with one printable line, never anything else (no KeyError, no RecursionError,
no ValidationError escaping, no multi-line message)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceflow.config import Params, load_params
from onceflow.errors import ConfigError
from tests.conftest import REPO_ROOT

TEXT = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
BASE = yaml.safe_load(TEXT)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE)
names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=10)
leaves = (
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats()
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
)  # fmt: skip
values = st.recursive(
    leaves,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(names, kids, max_size=3),
    max_leaves=8,
)
mutations = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(PATHS), values),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("rename"), st.sampled_from(PATHS), names),
    st.tuples(st.just("add"), st.sampled_from(PATHS), st.tuples(names, values)),
)


def _apply(doc: dict, mutation: tuple) -> None:
    op, path, arg = mutation
    parent: Any = doc
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed the way there
    last = path[-1]
    if not isinstance(parent, dict | list):
        return
    if isinstance(parent, list) and (not isinstance(last, int) or last >= len(parent)):
        return
    if isinstance(parent, dict) and last not in parent:
        return
    if op == "set":
        parent[last] = arg
    elif op == "delete":
        del parent[last]
    elif op == "rename" and isinstance(parent, dict):
        parent[arg] = parent.pop(last)
    elif op == "add" and isinstance(parent, dict):
        parent[arg[0]] = arg[1]


def _load(text: str) -> Params | None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "params.yaml"
        p.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            return load_params(p)
        except ConfigError as err:
            msg = str(err)
            assert msg.startswith(str(p)) and msg.isprintable(), repr(msg)
            return None


@FUZZ
@given(st.lists(mutations, min_size=1, max_size=4))
def test_mutated_values_load_or_config_error(muts: list[tuple]) -> None:
    doc = copy.deepcopy(BASE)
    for m in muts:
        _apply(doc, m)
    _load(yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(st.data())
def test_mutated_text_loads_or_config_error(data: st.DataObject) -> None:
    """Edits of the file's text: cut a slice, insert characters, duplicate a line."""
    text = TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["cut", "insert", "duplicate"]))
        if op == "cut":
            text = text[:i] + text[i + data.draw(st.integers(1, 40)) :]
        elif op == "insert":
            text = text[:i] + data.draw(st.text(max_size=12)) + text[i:]
        else:
            lines = text.splitlines(keepends=True)
            k = data.draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[: k + 1] + [lines[k]] + lines[k + 1 :])
    _load(text)


def test_unmutated_file_loads() -> None:
    assert _load(TEXT) is not None
