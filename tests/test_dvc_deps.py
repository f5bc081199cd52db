"""dvc.yaml `deps` cover every stage's real import closure inside the repo.

For each stage (foreach expanded over params.yaml), the closure starts at the module its `cmd`
runs (`python -m stages.<name>`) and follows every import statement in the repo's own modules
(top level and inside functions), adding the package ``__init__.py`` files an import executes.
A file outside every `deps` entry (a directory entry covers the files under it) means a change
to it would not rerun the stage: the test names the stage and the file.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

# Top-level packages that live in the repo, and where their sources are.
PACKAGE_ROOTS = {"onceflow": REPO_ROOT / "src", "stages": REPO_ROOT, "flows": REPO_ROOT}
_MODULE_CMD = re.compile(r"\bpython3?\s+-m\s+([\w.]+)")


def _module_file(name: str) -> Path | None:
    """The file that defines module ``name`` (a .py or a package __init__), if in the repo."""
    root = PACKAGE_ROOTS.get(name.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _executed_files(name: str) -> set[Path]:
    """Files run by ``import name``: each enclosing package's __init__.py and the module."""
    parts = name.split(".")
    found = set()
    for i in range(1, len(parts) + 1):
        f = _module_file(".".join(parts[:i]))
        if f is not None:
            found.add(f)
    return found


def _module_name(path: Path) -> str:
    for top, root in PACKAGE_ROOTS.items():
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if rel.parts[0] == top:
            parts = list(rel.with_suffix("").parts)
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(f"{path} is not in a known package")


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (any depth: lazy imports count too)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            # `from pkg import sub` imports the submodule when there is one
            names.update(f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}"))
    return names


@cache
def import_closure(module: str) -> frozenset[Path]:
    todo = sorted(_executed_files(module))
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in _imports(f):
            todo.extend(_executed_files(name) - seen)
    return frozenset(seen)


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

    def interpolate(st: dict, key: str | None) -> dict:
        scope = params if key is None else {**params, "key": key}
        text = re.sub(r"\$\{([\w.-]+)\}", lambda m: str(_lookup(scope, m[1])), yaml.safe_dump(st))
        return yaml.safe_load(text)

    out = []
    for name, st in dvc["stages"].items():
        if "foreach" not in st:
            out.append((name, interpolate(st, None)))
            continue
        items = _lookup(params, re.fullmatch(r"\$\{(.+)\}", st["foreach"])[1])
        out += [(f"{name}@{key}", interpolate(st["do"], key)) for key in items]  # type: ignore[union-attr]
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
