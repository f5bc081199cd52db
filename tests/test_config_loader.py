"""The params loader, message by message: key paths, one-line errors, the strict YAML rules and
the size guard, each compared in full (targets of `make mutation` on params_file.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onceflow.config import load_params, parse_params
from onceflow.errors import ConfigError
from onceflow.params_file import MAX_PARAMS_VALUES, _count_values, _loc, _short, one_line


def _load(tmp_path: Path, text: str):
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    return load_params(p), p


def _error(tmp_path: Path, text: str) -> tuple[str, Path]:
    p = tmp_path / "params.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_params(p)
    return str(err.value), p


def test_key_paths() -> None:
    assert _loc(()) == "<top level>"
    assert _loc(("data",)) == "data"
    assert _loc(("latency", "targets", "x", "budgets", 0, "ms")) == (
        "latency.targets.x.budgets[0].ms"
    )
    assert _loc((3, "a")) == "[3].a"
    assert _loc(("base", "se\ned")) == "base.'se\\ned'"


def test_one_line_and_short() -> None:
    assert one_line("a\n  b\tc\x00d") == "a b c\\x00d"
    assert one_line("s3://u:pw@host/x") != "s3://u:pw@host/x"  # credentials masked
    assert _short("abc") == "'abc'"
    assert _short("x" * 100) == "'" + "x" * 76 + "..."
    assert len(_short("x" * 100)) == 80
    assert _short("x" * 78) == "'" + "x" * 78 + "'"  # exactly 80: kept whole
    assert _short(5, limit=3) == "5"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"val_fracton": 0.2}},
         "src.yaml: data.val_fracton: unknown key (check the spelling; see README 'Params')"),
        ({"base": {"seed": "x"}},
         "src.yaml: base.seed: Input should be a valid integer, unable to parse string as an "
         "integer (got 'x')"),
        ({"base": {"seed": -1, "threads": 0}},
         "src.yaml: base.seed: Input should be greater than or equal to 0 (got -1); "
         "base.threads: Input should be greater than or equal to 1 (got 0)"),
        ({"base": []}, "src.yaml: base: Input should be a valid dictionary or instance of "
                       "BaseConfig"),
        ({"data": {"source": "cifar10"}, "supernet": {"resolutions": [40]}},
         "src.yaml: supernet.resolutions: 40 exceeds the 32x32 images of data (cifar10); use "
         "resolutions <= 32"),
        ([1], "src.yaml: top level must be a mapping of sections, got list"),
        ("text", "src.yaml: top level must be a mapping of sections, got str"),
    ],
)  # fmt: skip
def test_parse_params_messages(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(raw, "src.yaml")
    assert str(err.value) == message


def test_parse_params_defaults() -> None:
    assert parse_params(None) == parse_params({}) == parse_params({"base": None})
    with pytest.raises(ConfigError, match=r"^params.yaml: "):
        parse_params({"nope": 1})


def test_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    with pytest.raises(ConfigError) as err:
        load_params(missing)
    assert str(err.value) == (
        f"{missing}: params file not found (run from the repo root or pass --params)"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"base:\n  seed: 1\n\xff")
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    assert str(err.value) == f"{bad}: not UTF-8 text (byte 16); save params.yaml as UTF-8"
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path)
    assert str(err.value) == f"{tmp_path}: cannot read the params file (Is a directory)"


def test_yaml_errors_name_line_and_column(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, "base:\n  seed: [1\n")
    assert msg == (
        f"{p}: not valid YAML at line 3, column 1: expected ',' or ']', but got '<stream end>'"
    )
    msg, p = _error(tmp_path, "base:\n  seed: 1\n  seed: 2\n")
    assert (
        msg == f"{p}: not valid YAML at line 3, column 3: key 'seed' appears twice in one mapping"
    )
    msg, p = _error(tmp_path, "base: {? [a, b]: 1}\n")
    assert "found unhashable key" in msg and msg.startswith(f"{p}: not valid YAML at line 1")
    msg, p = _error(tmp_path, "a: 1\n---\nb: 2\n")
    assert msg.startswith(f"{p}: not valid YAML at line 2, column 1: ")


def test_strict_loader_rules(tmp_path: Path) -> None:
    got, _ = _load(tmp_path, "train:\n  nodes: 1:2\n")  # YAML 1.2: a string, not 62
    assert got.train.nodes == "1:2"
    got, _ = _load(tmp_path, "base:\n  seed: 12\n  threads: 0x2\n")  # other ints unchanged
    assert (got.base.seed, got.base.threads) == (12, 2)
    got, _ = _load(tmp_path, "data:\n  val_fraction: 0.25\n  path: 'a:b'\n")
    assert (got.data.val_fraction, got.data.path) == (0.25, "a:b")
    got, _ = _load(tmp_path, "data:\n  path: 1:30\n")  # a string, whatever the schema wants
    assert got.data.path == "1:30"
    msg, p = _error(tmp_path, "base:\n  seed: 1:30\n")  # an int field: refused, not 90
    assert msg.startswith(f"{p}: base.seed: Input should be a valid integer") and "'1:30'" in msg
    got, _ = _load(tmp_path, "latency:\n  targets:\n    a: {backend: onnxruntime}\n"
                             "    b: {backend: onnxruntime}\n")  # fmt: skip
    assert sorted(got.latency.targets) == ["a", "b"]  # the same keys in other mappings: fine
    msg, p = _error(tmp_path, "base: {1: a, 1: b}\n")
    assert msg == f"{p}: not valid YAML at line 1, column 14: key 1 appears twice in one mapping"


def test_value_count_guard(tmp_path: Path) -> None:
    assert _count_values({"a": [1, 2]}, 100) == 5  # the dict, its key, the list, two items
    assert _count_values([[1], [2]], 100) == 5
    assert _count_values(7, 100) == 1
    assert _count_values(list(range(50)), 10) == 11  # stops once past the limit

    # x: a list of k aliases of one 18-item list: 3 + k * 19 values (the mapping, its key, the
    # outer list, then each inner list and its items), small text and fast to parse.
    def aliased(k: int) -> str:
        return "x: [&a [" + ", ".join(["1"] * 18) + "]" + ", *a" * (k - 1) + "]\n"

    assert MAX_PARAMS_VALUES == 3 + 5263 * 19
    msg, p = _error(tmp_path, aliased(5264))
    assert msg == (
        f"{p}: more than {MAX_PARAMS_VALUES} values (YAML aliases expanding?); this is not a "
        "params file"
    )
    msg, p = _error(tmp_path, aliased(5263))  # exactly the limit: on to the schema
    assert msg == f"{p}: x: unknown key (check the spelling; see README 'Params')"


def test_nesting_guard(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, "[" * 5000 + "]" * 5000)
    assert msg == f"{p}: nested too deeply to be a params file"
