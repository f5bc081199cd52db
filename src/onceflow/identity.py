"""One identity for code: a module's import closure inside the repo, and its digest.

The closure of a module is every file ``import module`` can run inside the given package roots:
the module, each enclosing package's ``__init__.py``, and, recursively, every module those files
import (at any depth, so imports inside functions count too). tests/test_dvc_deps.py checks
dvc.yaml's ``deps`` against it; :func:`code_digest` hashes it, so anything resumed or cached
across runs (training checkpoints, the predictor's measured rows) is keyed by the content of
exactly the code that produced it: an edit to any file in the closure means recompute, never
reuse, and an edit elsewhere leaves it alone.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Mapping
from pathlib import Path

import onceflow
from onceflow.io import sha256_files

# onceflow's own sources: ``<src>/onceflow/...``.
LIBRARY_ROOTS: Mapping[str, Path] = {"onceflow": Path(onceflow.__file__).resolve().parent.parent}


def module_file(name: str, roots: Mapping[str, Path] = LIBRARY_ROOTS) -> Path | None:
    """The file that defines module ``name`` (a .py or a package __init__), if under ``roots``
    (top-level package name -> the directory holding it)."""
    root = roots.get(name.split(".")[0])
    if root is None:
        return None
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def executed_files(name: str, roots: Mapping[str, Path] = LIBRARY_ROOTS) -> set[Path]:
    """Files run by ``import name``: each enclosing package's __init__.py and the module."""
    parts = name.split(".")
    found = set()
    for i in range(1, len(parts) + 1):
        f = module_file(".".join(parts[:i]), roots)
        if f is not None:
            found.add(f)
    return found


def module_name(path: Path, roots: Mapping[str, Path] = LIBRARY_ROOTS) -> str:
    """The dotted name of the module in ``path`` (a package's __init__ names the package)."""
    for top, root in roots.items():
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] == top:
            parts = list(rel.with_suffix("").parts)
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(f"{path} is not in a known package ({', '.join(roots)})")


def imports(path: Path, roots: Mapping[str, Path] = LIBRARY_ROOTS) -> set[str]:
    """Absolute module names ``path`` imports (any depth: lazy imports count too)."""
    me = module_name(path, roots)
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
            names.update(
                f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}", roots)
            )
    return names


def import_closure(module: str, roots: Mapping[str, Path] = LIBRARY_ROOTS) -> frozenset[Path]:
    """Every file under ``roots`` that ``import module`` can run (see the module docstring)."""
    todo = sorted(executed_files(module, roots))
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in imports(f, roots):
            todo.extend(executed_files(name, roots) - seen)
    return frozenset(seen)


def code_digest(module: str, roots: Mapping[str, Path] = LIBRARY_ROOTS, extra: str = "") -> str:
    """sha256 of ``module``'s import closure: each file's path relative to its root (sorted)
    and its bytes, after ``extra`` (e.g. library versions). Moving the tree keeps it; an
    edit to any file in the closure changes it."""
    by_root = {f: next(r for r in roots.values() if f.is_relative_to(r)) for f in
               import_closure(module, roots)}  # fmt: skip
    named = sorted((f.relative_to(r).as_posix(), f) for f, r in by_root.items())
    return sha256_files(named, hashlib.sha256(f"{module}\0{extra}\0".encode()))
