"""dvc.yaml `deps` cover every stage's real import closure inside the repo.

For each stage (foreach expanded over params.yaml), the closure starts at the module its `cmd`
runs (`python -m stages.<name>`) and follows every import statement in the repo's own modules
(top level and inside functions), adding the package ``__init__.py`` files an import executes.
A file outside every `deps` entry (a directory entry covers the files under it) means a change
to it would not rerun the stage: the test names the stage and the file.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from onceflow import identity
from tests.conftest import REPO_ROOT

# Top-level packages that live in the repo, and where their sources are.
PACKAGE_ROOTS = {"onceflow": REPO_ROOT / "src", "stages": REPO_ROOT, "flows": REPO_ROOT}
_MODULE_CMD = re.compile(r"\bpython3?\s+-m\s+([\w.]+)")


@cache
def import_closure(module: str) -> frozenset[Path]:
    """The library's closure (onceflow.identity, which also keys training and the predictor's
    rows) over the repo's packages: stages/ and flows/ as well as onceflow."""
    return identity.import_closure(module, PACKAGE_ROOTS)


def _lookup(params: dict, expr: str) -> object:
    value: object = params
    for part in expr.split("."):
        value = value[part]  # type: ignore[index]
    return value


def expand_stages(root: Path = REPO_ROOT) -> list[tuple[str, dict]]:
    """(name, definition) of every stage in ``root``'s dvc.yaml, foreach expanded over its
    params.yaml and ``${...}`` interpolated (as DVC does)."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())

    def interpolate(st: dict, key: str | None, item: object = None) -> dict:
        scope = params if key is None else {**params, "key": key, "item": item}
        text = re.sub(r"\$\{([\w.-]+)\}", lambda m: str(_lookup(scope, m[1])), yaml.safe_dump(st))
        return yaml.safe_load(text)

    out = []
    for name, st in dvc["stages"].items():
        if "foreach" not in st:
            out.append((name, interpolate(st, None)))
            continue
        items = _lookup(params, re.fullmatch(r"\$\{(.+)\}", st["foreach"])[1])
        out += [(f"{name}@{k}", interpolate(st["do"], k, v)) for k, v in items.items()]  # type: ignore[union-attr]
    return out


def uncovered(stage: dict) -> list[str]:
    """Repo files in the stage's import closure that no `deps` entry covers."""
    cmd = stage["cmd"]
    modules = _MODULE_CMD.findall(cmd)
    assert modules, f"cmd does not run a module: {cmd}"
    deps = [str(d).rstrip("/") for d in stage.get("deps", [])]
    missing = []
    for module in modules:
        for f in sorted(import_closure(module)):
            rel = f.relative_to(REPO_ROOT).as_posix()
            if not any(rel == d or rel.startswith(d + "/") for d in deps):
                missing.append(rel)
    return missing


def unused_code_deps(stage: dict) -> list[str]:
    """Code `deps` (under src/ or stages/) that cover no file of the import closure: stale
    entries that rerun the stage for nothing."""
    closure = {
        f.relative_to(REPO_ROOT).as_posix()
        for m in _MODULE_CMD.findall(stage["cmd"])
        for f in import_closure(m)
    }
    code = [str(d).rstrip("/") for d in stage.get("deps", [])]
    code = [d for d in code if d.split("/")[0] in ("src", "stages")]
    return [d for d in code if not any(f == d or f.startswith(d + "/") for f in closure)]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def undeclared_inputs(stage: dict) -> list[str]:
    """Paths the stage's `cmd` passes (``--flag path``) that are neither its outputs nor
    covered by a `deps` entry: an input whose change would not rerun the stage (``package``'s
    lineage of the latency table and the predictor, say)."""
    outs = [
        str(next(iter(e)) if isinstance(e, dict) else e)
        for kind in ("outs", "metrics", "plots")
        for e in stage.get(kind, [])
    ]
    deps = [str(d) for d in stage.get("deps", [])]
    missing = []
    for flag, value in re.findall(r"--([\w-]+)\s+([^\s-][^\s]*)", stage["cmd"]):
        if flag in ("params", "target") or any(_under(value, o) or _under(o, value) for o in outs):
            continue
        if not any(_under(value, d) or _under(d, value) for d in deps):
            missing.append(f"--{flag} {value}")
    return missing


STAGES = expand_stages()


@pytest.mark.parametrize(("name", "stage"), STAGES, ids=[n for n, _ in STAGES])
def test_deps_cover_the_import_closure(name: str, stage: dict) -> None:
    missing = uncovered(stage)
    assert not missing, (
        f"dvc.yaml stage {name!r}: its code imports {missing} but no `deps` entry covers "
        "them (add the file or its directory)"
    )


@pytest.mark.parametrize(("name", "stage"), STAGES, ids=[n for n, _ in STAGES])
def test_code_deps_are_imported(name: str, stage: dict) -> None:
    unused = unused_code_deps(stage)
    assert not unused, f"dvc.yaml stage {name!r}: deps {unused} are not imported by its code"


@pytest.mark.parametrize(("name", "stage"), STAGES, ids=[n for n, _ in STAGES])
def test_every_input_path_is_a_dep(name: str, stage: dict) -> None:
    missing = undeclared_inputs(stage)
    assert not missing, f"dvc.yaml stage {name!r} reads {missing} but does not list it in `deps`"


def test_closure_follows_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    closure = {f.relative_to(REPO_ROOT).as_posix() for f in import_closure("stages.prepare")}
    # executed package inits, the stage's direct imports and what they import in turn
    assert {"stages/__init__.py", "src/onceflow/__init__.py", "src/onceflow/stage.py",
            "src/onceflow/errors.py", "src/onceflow/data/__init__.py",
            "src/onceflow/data/prepared.py"} <= closure  # fmt: skip
    # a stage whose deps miss a file it imports is reported, naming the file
    bad = {"cmd": "python -m stages.prepare", "deps": ["stages/prepare.py", "src/onceflow/data"]}
    assert "src/onceflow/config.py" in uncovered(bad)
    assert not [m for m in uncovered(bad) if m.startswith("src/onceflow/data/")]
    assert unused_code_deps({**bad, "deps": ["src/onceflow/search"]}) == ["src/onceflow/search"]
    # a path the cmd passes that is neither an out nor a dep is reported
    pkg = {"cmd": "python -m stages.package --latency latency/a --out artifacts/a",
           "deps": ["stages/package.py"], "outs": ["artifacts/a"]}  # fmt: skip
    assert undeclared_inputs(pkg) == ["--latency latency/a"]
    assert undeclared_inputs({**pkg, "deps": ["latency/a"]}) == []
