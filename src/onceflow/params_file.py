"""Reading a params file: strict YAML (no duplicate keys, YAML 1.2's ``1:2``, a size guard
against alias bombs) and one-line error messages naming the file and each key path.

:mod:`onceflow.config` holds the schema and validates what this module reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from onceflow.errors import ConfigError
from onceflow.uri import redact


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, str) and not part.isprintable():
            part = repr(part)  # a control character in a key never reaches the log raw
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def one_line(text: str) -> str:
    """``text`` as one printable line (newlines and control characters escaped) with any
    credentials masked (onceflow.uri.redact): values are echoed back."""
    text = redact(text)
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in " ".join(text.split()))


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line naming the file, each offending key path and what is wrong with it."""
    problems = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see README 'Params')"
        elif "input" in e and not isinstance(e["input"], dict | list | BaseModel):
            msg = f"{msg} (got {_short(e['input'])})"
        loc = _loc(tuple(e["loc"]))
        # Model-level rules already name their key path.
        problems.append(msg if not e["loc"] or msg.startswith(loc) else f"{loc}: {msg}")
    return f"{source}: " + "; ".join(problems)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (plain YAML
    loaders keep the last one silently, so a duplicated section would hide the first; a merge
    key ``<<: *anchor`` is YAML and accepted, its keys overridable), and
    that ``1:2`` is the string YAML 1.2 and DVC read, not YAML 1.1's base-60 integer 62
    (``train.nodes: 1:2`` is a range of machines)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0] and ":" in value and tag in _BASE_60:
            return "tag:yaml.org,2002:str"
        return tag

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # An explicit tag on a value it cannot read (`!!int 0.0`, `!!bool maybe`) makes PyYAML
        # raise ValueError/KeyError/IndexError: report it like any other YAML error.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, IndexError, OverflowError):
            what = repr(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {what} as {node.tag}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if not isinstance(node, yaml.MappingNode):  # `!!map 0`: the base class says so
            return super().construct_mapping(node, deep=deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue  # `<<: *anchor`: keys written beside it override the merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_BASE_60 = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_MERGE = "tag:yaml.org,2002:merge"

# Aliases can make a small file expand into a huge structure ("billion laughs").
MAX_PARAMS_VALUES = 100_000


def _count_values(obj: Any, limit: int) -> int:
    """Values in ``obj`` (shared aliases counted each time), stopping once past ``limit``."""
    count, stack = 0, [obj]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def read_params_yaml(path: str | os.PathLike[str]) -> Any:
    """The parsed YAML of a params file (not yet validated). Every error is a ConfigError
    naming the file: missing, unreadable, not UTF-8, not YAML, a key given twice, nested too
    deeply, or more than :data:`MAX_PARAMS_VALUES` values."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: params file not found (run from the repo root or pass --params)"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {err.start}); save params.yaml as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"{p}: cannot read the params file ({err.strerror})") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(one_line(f"{p}: not valid YAML{where}: {problem}")) from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to be a params file") from None
    if _count_values(raw, MAX_PARAMS_VALUES) > MAX_PARAMS_VALUES:
        raise ConfigError(
            f"{p}: more than {MAX_PARAMS_VALUES} values (YAML aliases expanding?); "
            "this is not a params file"
        )
    return raw
