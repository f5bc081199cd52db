from pathlib import Path

import pytest
from pydantic import ValidationError

from onceflow.config import Params, load_params, parse_params
from onceflow.errors import ConfigError
from tests.conftest import REPO_ROOT


def test_repo_params_file_is_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.source == "fashion-mnist"
    assert 0 < params.data.val_fraction < 1


def test_unknown_key_names_file_and_path():
    with pytest.raises(ConfigError) as err:
        parse_params({"data": {"val_fracton": 0.1}}, "params.yaml")
    msg = str(err.value)
    assert msg.startswith("params.yaml: data.val_fracton: unknown key")
    assert "\n" not in msg


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match=r"tarin: unknown key"):
        parse_params({"tarin": {}})


def test_wrong_type_names_value():
    with pytest.raises(ConfigError, match=r"base.threads: .*integer.*'two'"):
        parse_params({"base": {"threads": "two"}})


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"data.val_fraction: .*less than 1"):
        parse_params({"data": {"val_fraction": 1.5}})


def test_empty_section_means_defaults():
    assert parse_params({"data": None}).data == Params().data


def test_config_is_frozen():
    params = parse_params({})
    with pytest.raises(ValidationError):
        params.base.seed = 3  # type: ignore[misc]


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_invalid_yaml_reports_line(tmp_path: Path):
    p = tmp_path / "params.yaml"
    p.write_text("base:\n  seed: [1,\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML at line"):
        load_params(p)
