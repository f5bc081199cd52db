"""The environment as an input: environment.yaml records the library versions that change
numbers; each dvc.yaml stage depends on exactly the versions it uses, so changing one reruns the
stages that use that library and nothing else (checked with the real `dvc status --json`); a
stage refuses to run when a recorded version is not the installed one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from onceflow.cli import lineage_lines
from onceflow.environment import (
    ENV_FILE,
    LIBRARIES,
    check_versions,
    installed_versions,
    read_environment,
    render,
    stage_libraries,
    write_environment,
)
from onceflow.errors import ConfigError
from onceflow.package.lineage import collect_lineage
from tests.conftest import REPO_ROOT, run_dvc
from tests.hostile.harness import Row, Workspace, check, run_stage
from tests.test_dvc_deps import STAGES, expand_stages
from tests.test_dvc_isolation import _changed, placeholder_repo


def _env_params(stage: dict) -> set[str]:
    """The libraries a stage lists as params of environment.yaml."""
    out: set[str] = set()
    for p in stage.get("params", []):
        if isinstance(p, dict) and ENV_FILE in p:
            out |= {v.removeprefix("versions.") for v in p[ENV_FILE]}
    return out


def _backend(stage: str) -> str | None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    _, _, target = stage.partition("@")
    return params["latency"]["targets"][target]["backend"] if target else None


@pytest.mark.parametrize(("name", "stage"), STAGES, ids=[n for n, _ in STAGES])
def test_dvc_yaml_lists_the_versions_each_stage_checks(name: str, stage: dict) -> None:
    """dvc.yaml's environment params and the library's per-stage list (what a stage checks
    at start) are the same."""
    want = set(stage_libraries(name.partition("@")[0], _backend(name)))
    assert _env_params(stage) == want, f"dvc.yaml stage {name!r}"
    assert want <= set(LIBRARIES)


def test_the_committed_file_is_current() -> None:
    """environment.yaml is what `onceflow env --write` writes here (else `make setup`)."""
    assert (REPO_ROOT / ENV_FILE).read_text() == render(installed_versions())
    assert read_environment(REPO_ROOT / ENV_FILE) == installed_versions()


def test_write_is_idempotent_and_the_check_names_file_library_versions_and_fix(
    tmp_path: Path,
) -> None:
    path, changed = write_environment(tmp_path)
    assert changed and path == tmp_path / ENV_FILE
    mtime = path.stat().st_mtime_ns
    assert write_environment(tmp_path) == (path, False) and path.stat().st_mtime_ns == mtime
    check_versions(path, LIBRARIES)  # as installed: no error
    doc = yaml.safe_load(path.read_text())
    have = doc["versions"]["numpy"]
    doc["versions"]["numpy"] = "1.0.0"
    path.write_text(yaml.safe_dump(doc))
    check_versions(path, ["torch"])  # a stage that does not use numpy does not care
    with pytest.raises(ConfigError) as err:
        check_versions(path, ["torch", "numpy"])
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "versions.numpy" in msg
    assert "1.0.0" in msg and have in msg and "make setup" in msg and "onceflow env --write" in msg
    assert write_environment(tmp_path) == (path, True)  # the fix
    for bad in ("versions: [1, 2]\n", "\xff\xfe", "versions:\n  torch: 2\n", "{"):
        path.write_text(bad, errors="surrogateescape")
        with pytest.raises(ConfigError, match=ENV_FILE):
            read_environment(path)


STALE = Row("environment-stale", lambda ws: None, "versions.numpy records 0.0.1")


def test_a_stage_with_a_stale_recorded_version_exits_2(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, params={"base": {"threads": 1}})
    versions = installed_versions()
    ws.path(ENV_FILE).write_text(render({**versions, "numpy": "0.0.1"}))
    args = ["--out", "data/prepared", "--report", "reports/v.json", "--summary", "reports/v.md",
            "--metrics", "metrics/data.json"]  # fmt: skip
    proc = run_stage(ws, "prepare", args, in_process=False)  # `python -m`: the stage by __spec__
    check(proc, STALE, [tmp_path / "data/prepared", tmp_path / "metrics/data.json"], tmp_path)
    assert "make setup" in proc.stderr


def test_show_prints_the_versions_a_model_was_built_with(tmp_path: Path) -> None:
    lineage, _ = collect_lineage({}, {}, tmp_path)
    assert lineage["versions"] == installed_versions()
    manifest = {"model_id": "m", "target": "t", "test_accuracy": 0.5,
                "latency_ms": {"measured": 1.0}, "lineage": lineage}  # fmt: skip
    [line] = [ln for ln in lineage_lines(manifest, "here", None) if ln.startswith("libraries")]
    assert f"onnxruntime {installed_versions()['onnxruntime']}" in line
    old = lineage_lines({**manifest, "lineage": {}}, "here", None)
    assert any("libraries  not recorded" in ln for ln in old)


def _expected(repo: Path, library: str) -> set[str]:
    return {n for n, st in expand_stages(repo) if library in _env_params(st)}


@pytest.mark.slow
def test_changing_a_recorded_version_reruns_exactly_the_stages_that_use_it(
    tmp_path: Path,
) -> None:
    repo = placeholder_repo(tmp_path)
    run_dvc(repo, "commit", "-f")
    assert _changed(repo) == set()
    env = repo / ENV_FILE
    clean = env.read_text()
    seen = {}
    for library in LIBRARIES:
        doc = yaml.safe_load(clean)
        doc["versions"][library] = "0.0.0-upgraded"
        env.write_text(yaml.safe_dump(doc))
        seen[library] = _changed(repo)
        env.write_text(clean)
    print(json.dumps({k: sorted(v) for k, v in seen.items()}, indent=1))
    for library, changed in seen.items():
        assert changed == _expected(repo, library), library
    targets = [n.partition("@")[2] for n, _ in STAGES if n.startswith("package@")]
    ort = [t for t in targets if _backend(f"latency_table@{t}") == "onnxruntime"]
    assert ort and len(ort) < len(targets)  # the defaults: ORT targets and a torch one
    parity = {f"package@{t}" for t in targets}  # every package checks ONNX parity in ORT
    ort_tables = {f"latency_table@{t}" for t in ort}
    assert seen["onnxruntime"] == ort_tables | parity | {"specialize_report"}
    assert seen["numba"] == {"train_supernet"} | {f"package@{t}" for t in targets}
    assert seen["tensorrt"] == {"specialize_report"}
    assert "publish" not in set().union(*seen.values())
    assert _changed(repo) == set()
