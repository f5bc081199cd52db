"""The package's layering, read from its imports (every ``import``, at module level or inside
a function): no module of ``onceflow`` imports, directly or through others, back into itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the onceflow modules it imports (``from pkg import mod`` counts ``pkg.mod``)."""
    files = {_module_name(p, src): p for p in (src / "onceflow").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = [node.module] if node.module else []
                target = ".".join(base + module) if node.level else (node.module or "")
                deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                found.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_loop_inside_onceflow() -> None:
    assert cycles(import_graph()) == []


def test_the_loop_check_sees_a_loop(tmp_path: Path) -> None:
    """The control: two modules that import each other (one lazily, inside a function)."""
    pkg = tmp_path / "onceflow" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "onceflow" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from onceflow.sub.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from . import a\n")
    (pkg / "c.py").write_text("import onceflow.sub.a\n")
    assert cycles(import_graph(tmp_path)) == [["onceflow.sub.a", "onceflow.sub.b"]]


# (lower package, package it must not reach, directly or through other modules)
FORBIDDEN = (("onceflow.search", "onceflow.predictor"),)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden_paths(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(module, module it reaches) for every module of a lower package that reaches, through
    any chain of imports, a module of the package it must not know."""
    found = []
    for low, high in FORBIDDEN:
        for start in sorted(m for m in graph if _in(m, low)):
            seen, todo = {start}, [start]
            while todo:
                for w in graph[todo.pop()]:
                    if w not in seen:
                        seen.add(w)
                        todo.append(w)
            found += [(start, w) for w in sorted(seen) if _in(w, high)]
    return found


def test_search_engine_imports_no_predictor() -> None:
    """The generic engine knows no predictor (issue 27): the adapter that wires predictor and
    search for a stage is ``onceflow.search_stage``, above both."""
    assert forbidden_paths(import_graph()) == []


def test_the_layer_check_sees_an_indirect_edge(tmp_path: Path) -> None:
    """The control: search -> util -> predictor (lazily, inside a function) is caught."""
    root = tmp_path / "onceflow"
    for pkg in ("search", "predictor"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "util.py").write_text("def f():\n    from onceflow.predictor import fit\n")
    (root / "predictor" / "fit.py").write_text("")
    (root / "search" / "nsga.py").write_text("from onceflow import util\n")
    assert forbidden_paths(import_graph(tmp_path)) == [
        ("onceflow.search.nsga", "onceflow.predictor"),
        ("onceflow.search.nsga", "onceflow.predictor.fit"),
    ]


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each top-level module or package of ``onceflow`` -> its floor: 0 for one that imports
    no other, else one above the highest it imports (the import graph has no loop)."""
    top = {m: m.split(".")[1] for m in graph if m.count(".") >= 1}
    edges: dict[str, set[str]] = {t: set() for t in top.values()}
    for m, deps in graph.items():
        if m in top:
            edges[top[m]].update(top[d] for d in deps if d in top and top[d] != top[m])
    memo: dict[str, int] = {}

    def floor(n: str) -> int:
        if n not in memo:
            memo[n] = 1 + max((floor(d) for d in edges[n]), default=-1)
        return memo[n]

    return {n: floor(n) for n in edges}


def readme_floors(text: str) -> dict[str, int]:
    """The layer map in README's code-layout section: ``| floor | modules |`` rows."""
    table = text.split("| floor | modules |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.MULTILINE)
    return {m.strip(" `/"): int(f) for f, mods in rows for m in mods.split(",")}


def test_readme_layer_map_matches_the_imports() -> None:
    readme = (SRC.parent / "README.md").read_text(encoding="utf-8")
    assert readme_floors(readme) == floors(import_graph()), (
        "README's layer map (code layout) differs from the imports: update the table"
    )
