from pathlib import Path

import pytest
import yaml
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


# --- every rule checkable from params.yaml alone fails at load (issue 14) ---
@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"data": {"val_fraction": float("nan")}}, r"data.val_fraction: .*finite"),
        ({"train": {"weight_decay": float("inf")}}, r"train.weight_decay: .*finite"),
        ({"latency": {"targets": {"Ort-CPU": {}}}}, r"name 'Ort-CPU' must be lower-case"),
        ({"latency": {"targets": {"a_b": {}}}}, r"name 'a_b' must be lower-case"),
        ({"search": {"budgets": {"ort-cpux": {}}}}, r"search.budgets moved"),
        (
            {"latency": {"targets": {"ort-cpu": {"budgets": {"unit": "ms", "values": [0]}}}}},
            r"must be > 0",
        ),
        ({"search": {"default_budgets": {"values": [0.5, 0.5]}}}, r"must be distinct"),
        ({"data": {"max_train": 5}}, r"data.max_train: 5 cannot give each of the 10"),
        ({"data": {"max_test": 3}}, r"data.max_test: 3 cannot give"),
        ({"data": {"channels": 3}}, r"data.channels applies to data.source imagefolder only"),
        ({"data": {"path": "a\x00b"}}, r"data.path: must not contain control characters"),
        ({"supernet": {"resolutions": [28, 32]}}, r"supernet.resolutions: 32 exceeds the 28x28"),
        ({"train": {"processes": 4, "batch_size": 2}}, r"train.batch_size \(2\) cannot be split"),
        ({"train": {"ddp_backend": "nccl"}}, r"train.ddp_backend: nccl needs base.device cuda"),
        ({"train": {"phases": [{"name": "a", "epochs": 1, "lr": 0.1}] * 2}}, r"unique"),
        ({"base": {"seed": -1}}, r"base.seed: .*greater than or equal to 0"),
        ({"predictor": {"n_samples": 12}}, r"predictor.n_samples: 12 .* use n_samples >= 13"),
    ],
)
def test_rules_checked_at_load(raw: dict, match: str):
    with pytest.raises(ConfigError, match=match) as err:
        parse_params(raw)
    assert "\n" not in str(err.value) and "Value error" not in str(err.value)


def test_imagefolder_resolution_checked_against_image_size():
    ok = {"source": "imagefolder", "path": "x", "image_size": 28}
    parse_params({"data": ok})
    with pytest.raises(ConfigError, match=r"exceeds the 20x20 images"):
        parse_params({"data": {**ok, "image_size": 20}})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("data:\n  source: cifar10\ndata:\n  val_fraction: 0.2\n", r"line 3.*'data' appears twice"),
        ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
         + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                   for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
         r"more than 100000 values"),
        ("[" * 5000 + "]" * 5000, r"nested too deeply"),
        # Explicit tags on values they cannot read (PyYAML raised ValueError/KeyError/...).
        ("base:\n  seed: !!int 0.0\n", r"line 2, column 9: cannot read '0.0' as tag:yaml.+:int"),
        ("base:\n  seed: !!bool maybe\n", r"line 2.*cannot read 'maybe' as tag:yaml.+:bool"),
        ("a: !!timestamp 2001-99-99\n", r"line 1.*cannot read '2001-99-99' as tag.+:timestamp"),
        ("a: !!map 0\n", r"line 1.*expected a mapping node, but found scalar"),
        ("a: !!float abc\n", r"line 1.*cannot read 'abc'"),
        ("a: !!int\n", r"line 1.*cannot read '' as tag:yaml.org,2002:int"),
    ],
)  # fmt: skip
def test_hostile_yaml(tmp_path: Path, text: str, match: str):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_params(p)


def test_not_utf8_or_a_directory(tmp_path: Path):
    (tmp_path / "params.yaml").write_bytes(b"base:\n  seed: \xff\n")
    with pytest.raises(ConfigError, match=r"not UTF-8"):
        load_params(tmp_path / "params.yaml")
    with pytest.raises(ConfigError, match=r"cannot read the params file"):
        load_params(tmp_path)


def test_yaml_merge_keys_are_accepted_like_any_yaml(tmp_path: Path):
    """``<<: *anchor`` is YAML (DVC reads params.yaml with merge keys too): the strict loader
    takes it, a key written beside the merge overrides the merged one (YAML's rule, not a
    duplicate), and the result is what plain yaml.safe_load and the schema make of the text."""
    text = (
        "latency:\n"
        "  targets:\n"
        "    a: &t {backend: onnxruntime, threads: 1, batch_size: 1}\n"
        "    b:\n"
        "      <<: *t\n"
        "      threads: 2\n"
        "    c: {<<: *t, precision: fp32}\n"
    )
    p = tmp_path / "params.yaml"
    p.write_text(text)
    got = load_params(p)
    assert got == parse_params(yaml.safe_load(text))
    targets = got.latency.targets
    assert (targets["a"].threads, targets["b"].threads, targets["c"].threads) == (1, 2, 1)
    assert targets["c"].precision == "fp32" and targets["b"].batch_size == 1


def test_merge_keys_keep_the_duplicate_key_check_and_need_a_mapping(tmp_path: Path):
    p = tmp_path / "params.yaml"
    p.write_text("base:\n  <<: {seed: 1}\n  threads: 1\n  threads: 2\n")
    with pytest.raises(ConfigError, match=r"line 4.*'threads' appears twice"):
        load_params(p)
    p.write_text("base:\n  <<: 3\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2.*mapping"):
        load_params(p)
