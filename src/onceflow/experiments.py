"""``dvc exp show`` as a table that fits a terminal: one row per headline, one column per run.

``dvc exp show`` puts every metric in a column named ``file:key`` when two files share the key
(they do: the headline files share one vocabulary, :data:`onceflow.metrics.HEADLINE_KEYS`), and
it also lists the ``.details.json`` metrics, so a sweep is hundreds of characters wide. Here the
same ``dvc exp show --json`` is read and turned on its side: rows are the params that differ and
the headlines (grouped by file, ``search/ort-cpu`` for ``metrics/search/ort-cpu.json``; details
left out), columns are the baseline commits and their experiments. Adding a target adds rows,
not width.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onceflow.errors import DataError
from onceflow.metrics import DETAILS_SUFFIX

PARAMS_FILE = "params.yaml"
METRICS_DIR = "metrics/"
MISSING = "-"


@dataclass(frozen=True)
class Run:
    """One column: a baseline commit or one of its experiments."""

    name: str  # the experiment's name, or the branch/short sha of a baseline commit
    rev: str  # its commit sha
    figures: dict[tuple[str, str], Any] = field(default_factory=dict)  # (group, key) -> value


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in doc.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _metrics_group(path: str) -> str | None:
    """``metrics/search/ort-cpu.json`` -> ``search/ort-cpu``; None for a details file."""
    if path.endswith(DETAILS_SUFFIX):
        return None
    name = path[len(METRICS_DIR) :] if path.startswith(METRICS_DIR) else path
    return name[: -len(".json")] if name.endswith(".json") else name


def _values(data: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    for path, result in (data.get("params") or {}).items():
        group = "params" if path == PARAMS_FILE else f"params {path}"
        for key, value in _flatten((result or {}).get("data") or {}):
            out[(group, key)] = value
    for path, result in (data.get("metrics") or {}).items():
        group = _metrics_group(path)
        if group is not None:
            for key, value in _flatten((result or {}).get("data") or {}):
                out[(group, key)] = value
    return out


def runs_from_show(show: Sequence[Mapping[str, Any]]) -> tuple[list[Run], list[str]]:
    """The columns of ``dvc exp show --json`` (the workspace only where it differs from the
    first commit: uncommitted results), and the names of the experiments that have no results
    (queued, running or failed)."""
    runs: list[Run] = []
    pending: list[str] = []
    workspace: Run | None = None
    for base in show:
        rev = str(base.get("rev") or "")
        if rev == "workspace":
            if base.get("data"):
                workspace = Run("workspace", "", _values(base["data"]))
            continue
        if base.get("data"):
            runs.append(Run(str(base.get("name") or rev[:7]), rev, _values(base["data"])))
        for exp_range in base.get("experiments") or []:
            status = (exp_range.get("executor") or {}).get("state") or "success"
            for state in exp_range.get("revs") or []:
                name = str(state.get("name") or exp_range.get("name") or state.get("rev", "")[:7])
                if status == "success" and state.get("data") and not state.get("error"):
                    runs.append(Run(name, str(state.get("rev") or ""), _values(state["data"])))
                else:  # a queued one has its params but no results; a running one, some
                    pending.append(f"{name} ({status})")
    if workspace is not None and (not runs or workspace.figures != runs[0].figures):
        runs.insert(0, workspace)  # uncommitted results (else it repeats HEAD's column)
    return runs, pending


def _differs(runs: Sequence[Run], key: tuple[str, str]) -> bool:
    return len({json.dumps(r.figures.get(key), sort_keys=True) for r in runs}) > 1


def select_rows(runs: Sequence[Run], all_headlines: bool = False) -> list[tuple[str, str]]:
    """The (group, key) rows: params that differ between the runs, then the headlines that
    differ (every headline with ``all_headlines`` or when there is one run), in DVC's order."""
    keys: dict[tuple[str, str], None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.figures))
    groups = list(dict.fromkeys(g for g, _ in keys))  # a group's rows stay together
    ordered = sorted(keys, key=lambda k: (not k[0].startswith("params"), groups.index(k[0])))
    every = all_headlines or len(runs) < 2
    return [k for k in ordered if _differs(runs, k) or (every and not k[0].startswith("params"))]


def format_value(value: Any) -> str:
    """A cell: floats to 5 significant digits (DVC's precision), lists as JSON."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, ".5g")
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def render(runs: Sequence[Run], rows: Sequence[tuple[str, str]]) -> list[str]:
    """The table's lines: a header of run names and short shas, then each group's rows."""
    cells = [[format_value(r.figures.get(k)) if k in r.figures else MISSING for r in runs]
             for k in rows]  # fmt: skip
    labels: list[tuple[str, bool]] = []  # (text, is a group heading)
    for i, (group, key) in enumerate(rows):
        if i == 0 or rows[i - 1][0] != group:
            labels.append((group, True))
        labels.append((f"  {key}", False))
    first = max((len(text) for text, _ in labels), default=0)
    widths = [
        max(len(r.name), 7, *(len(c[i]) for c in cells)) for i, r in enumerate(runs)
    ]  # fmt: skip
    lines = [
        " " * first + "".join(f"   {r.name:>{w}}" for r, w in zip(runs, widths, strict=True)),
        " " * first + "".join(f"   {r.rev[:7]:>{w}}" for r, w in zip(runs, widths, strict=True)),
    ]
    row = iter(cells)
    for label, heading in labels:
        if heading:
            lines.append(label)
            continue
        values = next(row)
        lines.append(
            f"{label:<{first}}"
            + "".join(f"   {v:>{w}}" for v, w in zip(values, widths, strict=True))
        )
    return [ln.rstrip() for ln in lines]


def exp_show_json(root: str | os.PathLike[str], extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of the project at ``root`` (a failure: one line naming it)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *extra]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"{root}: `dvc exp show --json` failed: {why}")
    try:
        doc = json.loads(res.stdout)
    except ValueError as err:
        raise DataError(f"{root}: `dvc exp show --json` printed no JSON ({err})") from None
    if not isinstance(doc, list):
        raise DataError(f"{root}: `dvc exp show --json` printed {type(doc).__name__}, not a list")
    return doc


def experiments_table(
    show: Sequence[Mapping[str, Any]], all_headlines: bool = False
) -> tuple[list[str], list[str]]:
    """The table's lines for ``dvc exp show --json`` output, and the experiments left out
    because they have no results yet."""
    runs, pending = runs_from_show(show)
    if not runs:
        return [], pending
    return render(runs, select_rows(runs, all_headlines)), pending
