"""Mutations of the repo's valid params.yaml, checked against a reference.

The reference is plain ``yaml.safe_load`` plus the schema (``parse_params``). For every mutated
file the strict loader must either return exactly the Params the reference validates, or raise
ConfigError with one printable line naming the file, and it may refuse what the reference
accepts only for its documented reasons: a key given twice, more than ``MAX_PARAMS_VALUES``
values (aliases expanding), nesting too deep to parse. A loader that validated nothing, or one
that refused valid YAML (merge keys once were), fails here.

Mutations are structural, not only characters: values and keys replaced (keys of any YAML type:
int, bool, null, float, a sequence), deep nesting (up to thousands of levels), anchors and
aliases, alias bombs, merge keys (``<<:``), tags (``!!str``, ``!!python/object``, ``!custom``,
``!!binary``, ``!!set``), and the root replaced (a list, a scalar, an alias, empty). ``1:30`` is
left out: the loader reads it as YAML 1.2 and DVC do (a string), safe_load's YAML 1.1 as 5400;
tests/test_config.py covers it. Hypothesis runs derandomized (the examples follow from this
file's code, the same on every machine and run) and prints a failing example, so a CI failure
replays with ``pytest`` alone.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceflow.config import Params, load_params, parse_params
from onceflow.errors import ConfigError
from onceflow.params_file import MAX_PARAMS_VALUES
from tests.conftest import REPO_ROOT

TEXT = (REPO_ROOT / "params.yaml").read_text(encoding="utf-8")
BASE = yaml.safe_load(TEXT)
FUZZ = settings(
    max_examples=50,
    derandomize=True,  # replayable: the same examples on every run and machine
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Refusals of YAML the reference loads, each a documented rule of the strict loader.
STRICT_RULES = ("appears twice", f"more than {MAX_PARAMS_VALUES} values", "nested too deeply")


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
# A target entry of the real file: a valid mapping to alias and merge.
TARGET = next(iter(BASE["latency"]["targets"]))


# ------------------------------------------------------------------ YAML fragments (flow text)
def _quoted(s: str) -> str:
    return '"' + "".join(c if c.isalnum() or c in " -_." else f"\\u{ord(c):04x}" for c in s) + '"'


scalars = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: yaml.safe_dump(f).split("\n")[0]),
    st.sampled_from(
        [
            "null",
            "~",
            "true",
            "false",
            "yes",
            "off",
            "''",
            "0x1f",
            "0o17",
            "1e400",
            "-.inf",
            ".nan",
            "2001-12-14",
            "a: b",
        ]
    ),  # fmt: skip
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12).map(_quoted),
)
tags = st.sampled_from([
    "!!str", "!!int", "!!float", "!!bool", "!!null", "!!binary", "!!map", "!!seq", "!!set",
    "!!timestamp", "!!python/object:os.system", "!!python/name:os.system", "!custom",
    "!<tag:example.com,2024:x>",
])  # fmt: skip
keys = st.one_of(
    st.sampled_from(["seed", "threads", "device", "backend", "targets", "epochs", "<<"]),
    st.sampled_from(["1", "-3", "true", "null", "1.5", "[1, 2]", "{a: 1}", "? x", "!!int 7"]),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8).map(_quoted),
)


def _fragments(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return scalars
    kid = _fragments(depth - 1)
    return st.one_of(
        scalars,
        st.lists(kid, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(keys, kid), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
        st.tuples(tags, kid).map(lambda tv: f"{tv[0]} {tv[1]}"),
    )


fragments = _fragments(3)
nested = st.tuples(st.sampled_from("[{"), st.sampled_from([2, 30, 300, 3000])).map(
    lambda bn: ("[" * bn[1] + "]" * bn[1]) if bn[0] == "[" else ("{a: " * bn[1] + "1" + "}" * bn[1])
)


def _bomb(width: int, levels: int) -> str:
    """A list whose aliases expand to ``width ** (levels + 1)`` values (billion laughs)."""
    parts = [f"&l0 [{', '.join(['1'] * width)}]"]
    parts += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


bombs = st.tuples(st.integers(2, 12), st.integers(1, 6)).map(lambda wl: _bomb(*wl))


# ------------------------------------------------------------------------------ mutations
# Each mutation is applied to a copy of BASE; fragments go in as placeholders that are replaced
# by their text after yaml.safe_dump, so aliases, merges and tags reach the file as written.
ANCHOR = f"&anchor{TARGET}"
structural = st.one_of(
    st.tuples(st.just("fragment"), st.sampled_from(PATHS), fragments | nested | bombs),
    st.tuples(st.just("alias"), st.sampled_from(PATHS), st.just(f"*anchor{TARGET}")),
    st.tuples(st.just("merge"), st.sampled_from(PATHS), st.tuples(keys, fragments)),
    st.tuples(st.just("key"), st.sampled_from(PATHS), st.tuples(keys, fragments)),
    st.tuples(st.just("delete"), st.sampled_from(PATHS), st.none()),
    st.tuples(st.just("new-target"), st.just(("latency", "targets")), fragments),
)
roots = st.one_of(
    fragments, nested, bombs,
    st.sampled_from(["", "~", "[]", "{}", "*a", "&a {base: {seed: 1}}", "- base\n- data",
                     "!!python/object:os.system {}", "<<: {base: {seed: 2}}\ndata: {}",
                     "--- {}\n--- {}"]),
)  # fmt: skip


def _lookup(doc: Any, path: tuple) -> tuple[Any, Any] | None:
    parent = doc
    for part in path[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return None  # an earlier mutation removed the way there
    last = path[-1]
    if isinstance(parent, dict) and last in parent:
        return parent, last
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        return parent, last
    return None


def mutated_text(muts: list[tuple]) -> str:
    """BASE with ``muts`` applied, as YAML text. The first target entry carries an anchor so
    that aliases and merges have something valid to refer to."""
    doc = copy.deepcopy(BASE)
    frags: dict[str, str] = {}

    def hole(text: str) -> str:
        name = f"HOLE{len(frags)}X"
        frags[name] = text
        return name

    doc["latency"]["targets"][TARGET] = hole(
        f"{ANCHOR} "
        + yaml.safe_dump(
            BASE["latency"]["targets"][TARGET], default_flow_style=True
        ).strip()  # fmt: skip
    )
    for op, path, arg in muts:
        if op == "new-target":
            doc["latency"]["targets"][hole("z9")] = hole(f"{{<<: *anchor{TARGET}, threads: {arg}}}")
            continue
        found = _lookup(doc, path)
        if found is None:
            continue
        parent, last = found
        if op in ("fragment", "alias"):
            parent[last] = hole(arg)
        elif op == "delete":
            del parent[last]
        elif op == "merge" and isinstance(parent[last], dict):
            parent[last]["<<"] = hole(f"{{{arg[0]}: {arg[1]}}}")
        elif op == "merge":
            parent[last] = hole(f"{{<<: *anchor{TARGET}}}")
        elif op == "key" and isinstance(parent[last], dict):
            parent[last][hole(arg[0])] = hole(arg[1])
    text = yaml.safe_dump(doc, sort_keys=False, width=10**9, allow_unicode=True)
    text = text.replace("'<<':", "<<:")
    for name, frag in frags.items():
        text = text.replace(name, frag)
    return text


# ------------------------------------------------------------------------------ the check
def _reference(text: str) -> tuple[str, Any]:
    """("yaml-error", None) | ("config-error", message) | ("too-many", None) | ("ok", Params)."""
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return "yaml-error", None
    except (ValueError, KeyError, IndexError, OverflowError):  # `!!int 0.0`: PyYAML's own crash
        return "yaml-error", None
    if _too_many(raw):
        return "too-many", None
    try:
        return "ok", parse_params(raw, "params.yaml")
    except ConfigError as err:
        return "config-error", str(err)


def _too_many(obj: Any) -> bool:
    count, stack = 0, [obj]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_PARAMS_VALUES:
            return True
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set):
            stack += list(item)
    return False


def check_against_reference(text: str, tmp: Path) -> Params | None:
    p = tmp / "params.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogateescape")
    kind, ref = _reference(text)
    try:
        got = load_params(p)
    except ConfigError as err:
        msg = str(err)
        assert msg.startswith(f"{p}: ") and msg.isprintable(), repr(msg)
        if kind == "ok":
            assert any(rule in msg for rule in STRICT_RULES), (
                f"refused what plain YAML + the schema accept: {msg}\n{text[:2000]}"
            )
        return None
    assert kind == "ok", f"accepted, but the reference says {kind}: {ref}\n{text[:2000]}"
    assert got == ref, f"accepted a config other than the reference's\n{text[:2000]}"
    return got


# ------------------------------------------------------------------------------ the fuzz
@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(st.lists(structural, min_size=1, max_size=4))
def test_structural_mutations_match_the_reference(tmp: Path, muts: list[tuple]) -> None:
    check_against_reference(mutated_text(muts), tmp)


@FUZZ
@given(roots)
def test_replaced_root_matches_the_reference(tmp: Path, root: str) -> None:
    check_against_reference(root, tmp)


@FUZZ
@given(st.data())
def test_mutated_text_matches_the_reference(tmp: Path, data: st.DataObject) -> None:
    """Edits of the file's text: cut a slice, insert characters or a fragment, duplicate a
    line."""
    text = TEXT
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["cut", "insert", "fragment", "duplicate"]))
        if op == "cut":
            text = text[:i] + text[i + data.draw(st.integers(1, 40)) :]
        elif op == "insert":
            text = text[:i] + data.draw(st.text(max_size=12)) + text[i:]
        elif op == "fragment":
            text = text[:i] + data.draw(fragments | nested) + text[i:]
        else:
            lines = text.splitlines(keepends=True)
            k = data.draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[: k + 1] + [lines[k]] + lines[k + 1 :])
    check_against_reference(text, tmp)


# --------------------------------------------------------------- the generator reaches its claims
def test_the_generator_reaches_each_structure(tmp: Path) -> None:
    """Hand-picked mutations through the same generator and check: an accepted merge and alias,
    an alias bomb and deep nesting refused, non-string keys and unsafe tags refused."""
    merged = check_against_reference(
        mutated_text([("new-target", ("latency", "targets"), "3")]), tmp
    )
    assert merged is not None and merged.latency.targets["z9"].threads == 3
    aliased = mutated_text(
        [("alias", ("base",), f"*anchor{TARGET}")]
    )  # base: *anchor<target>: schema error
    assert check_against_reference(aliased, tmp) is None
    bomb = mutated_text([("fragment", ("predictor",), _bomb(10, 5))])
    with pytest.raises(ConfigError, match=f"more than {MAX_PARAMS_VALUES} values"):
        load_params(_write(tmp, bomb))
    deep = mutated_text([("fragment", ("search",), "[" * 3000 + "]" * 3000)])
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_params(_write(tmp, deep))
    for key, match in (("1", "Keys should be strings"), ("[1, 2]", "unhashable"), ("null", "Keys")):
        text = mutated_text([("key", ("base",), (key, "1"))])
        with pytest.raises(ConfigError, match=match):
            load_params(_write(tmp, text))
    for tag in ("!!python/object:os.system {}", "!custom 1"):
        with pytest.raises(ConfigError, match="not valid YAML.*constructor"):
            load_params(_write(tmp, mutated_text([("fragment", ("base", "seed"), tag)])))


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "hand.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_unmutated_file_loads(tmp: Path) -> None:
    assert check_against_reference(TEXT, tmp) == load_params(REPO_ROOT / "params.yaml")
