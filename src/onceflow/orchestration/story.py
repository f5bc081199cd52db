"""The run's story for people: every stage's key metrics as one markdown page, the picks as table
rows, and the Pareto plots inlined. The flow turns these into Prefect artifacts.

Reads the headline ``metrics/<name>.json`` files (and ``metrics/<name>.details.json`` beside them
for lists that live there). A missing file leaves its section out (the stage has not run); a file
that is not JSON, or a key of the wrong type, is an error naming the file and key: the flow shows
what the stages wrote, and never guesses.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onceflow.errors import DataError

_NUM = (int, float)


class MetricsFile:
    """One headline metrics file and its optional ``.details.json`` companion."""

    def __init__(self, root: Path, rel: str) -> None:
        self.path = root / rel
        self.head = _load(self.path)
        self.details_path = self.path.with_suffix(".details.json")
        self.details = _load(self.details_path) if self.head is not None else None

    def get(self, *keys: str, kind: type | tuple[type, ...] = _NUM) -> Any:
        """The value at ``keys`` (headline first, then details); None if absent, DataError if
        present with the wrong type."""
        for doc, path in ((self.head, self.path), (self.details, self.details_path)):
            value: Any = doc
            for k in keys:
                value = value.get(k) if isinstance(value, dict) else None
            if value is None:
                continue
            if isinstance(value, bool) and kind is _NUM or not isinstance(value, kind):
                raise DataError(
                    f"{path}: {'.'.join(keys)} is {value!r}, expected {_kind_name(kind)};"
                    " rerun the stage that writes it"
                )
            return value
        return None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return "a number" if kind is _NUM else getattr(kind, "__name__", str(kind))


def _load(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.2%}"


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


@dataclass(frozen=True)
class Pick:
    """A packaged model: what search predicted against what packaging measured."""

    target: str
    model_id: str
    budget_ms: float | None
    predicted_accuracy: float | None
    test_accuracy: float | None
    predicted_latency_ms: float | None
    measured_latency_ms: float | None
    published: str  # registry status ("published", "unchanged") or "" if not published

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _published(root: Path) -> tuple[str, dict[tuple[str, str], str]]:
    m = MetricsFile(root, "metrics/publish.json")
    if m.head is None:
        return "", {}
    status = {}
    for item in m.get("packages", kind=list) or []:
        if not isinstance(item, dict) or not {"target", "model_id"} <= set(item):
            raise DataError(f"{m.path}: packages entries need target and model_id, got {item!r}")
        status[(str(item["target"]), str(item["model_id"]))] = str(item.get("status", "published"))
    return str(m.get("registry", kind=str) or ""), status


def picks(root: str | os.PathLike[str], targets: list[str]) -> list[Pick]:
    """One row per packaged model of each target (from ``metrics/package/<T>.json``)."""
    root = Path(root)
    _, status = _published(root)
    out = []
    for t in targets:
        m = MetricsFile(root, f"metrics/package/{t}.json")
        for p in m.get("packages", kind=list) or []:
            if not isinstance(p, dict) or "model_id" not in p:
                raise DataError(f"{m.path}: packages entries need a model_id, got {p!r}")
            measured = p.get("latency_ms")
            if isinstance(measured, dict):  # {"measured": ...} in package manifests
                measured = measured.get("measured")
            vals = {k: p.get(k) for k in ("budget_ms", "predicted_accuracy", "test_accuracy",
                                          "predicted_latency_ms")}  # fmt: skip
            for k, v in [*vals.items(), ("latency_ms", measured)]:
                if v is not None and (isinstance(v, bool) or not isinstance(v, _NUM)):
                    raise DataError(f"{m.path}: packages[].{k} is {v!r}, expected a number")
            mid = str(p["model_id"])
            out.append(Pick(t, mid, **vals, measured_latency_ms=measured,
                            published=status.get((t, mid), "")))  # fmt: skip
    return out


def story_markdown(root: str | os.PathLike[str], targets: list[str], title: str) -> str:
    """The run's key metrics, stage by stage, as markdown (sections only for stages that ran)."""
    root = Path(root)
    parts = [f"# {title}\n"]
    sup = MetricsFile(root, "metrics/supernet.json")
    if sup.head is not None:
        parts.append(
            "## Supernet\n\n| subnet | val accuracy |\n|---|---|\n"
            + "".join(f"| {n} | {_pct(sup.get(f'val_acc_{n}'))} |\n" for n in ("max", "mid", "min"))
        )
    rows = []
    for t in targets:
        lat = MetricsFile(root, f"metrics/latency/{t}.json")
        if lat.head is not None:
            rows.append(
                f"| {t} | {_pct(lat.get('within_10pct'))} | {_num(lat.get('kendall_tau'))} |"
                f" {_pct(lat.get('mape'))} |\n"
            )
    if rows:
        parts.append(
            "## Latency tables (estimator vs measured, held-out subnets)\n\n"
            "| target | within ±10% | Kendall τ | MAPE |\n|---|---|---|---|\n" + "".join(rows)
        )
    pred = MetricsFile(root, "metrics/predictor.json")
    if pred.head is not None:
        ceiling = pred.get("label_noise", "tau_ceiling")
        if ceiling is None:
            ceiling = pred.get("tau_ceiling")
        parts.append(
            "## Accuracy predictor\n\n| model | held-out Kendall τ | τ ceiling (label noise) |\n"
            f"|---|---|---|\n| {pred.get('model', kind=str) or '–'} |"
            f" {_num(pred.get('kendall_tau'))} | {_num(ceiling)} |\n"
        )
    ps = picks(root, targets)
    if ps:
        lines = [
            "## Picks (search predicted vs package measured)\n",
            "| target | model | budget (ms) | accuracy predicted | accuracy measured |"
            " latency predicted (ms) | latency measured (ms) | published |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {p.target} | `{p.model_id}` | {_num(p.budget_ms)} | {_pct(p.predicted_accuracy)} |"
            f" {_pct(p.test_accuracy)} | {_num(p.predicted_latency_ms)} |"
            f" {_num(p.measured_latency_ms)} | {p.published or '–'} |"
            for p in ps
        ]
        parts.append("\n".join(lines) + "\n")
    registry, status = _published(root)
    if registry:
        n = sum(s == "published" for s in status.values())
        parts.append(
            f"## Published\n\n{n} new of {len(status)} packages in `{registry}`"
            f" (`onceflow ls --registry {registry}`).\n"
        )
    if len(parts) == 1:
        parts.append("_No stage metrics yet._\n")
    return "\n".join(parts)


def pareto_markdown(root: str | os.PathLike[str], max_bytes: int = 2_000_000) -> str | None:
    """Markdown with each target's Pareto plot inlined (PNG data URI), or None if none exist."""
    plots = sorted((Path(root) / "plots" / "search").glob("*.png"))
    if not plots:
        return None
    parts = ["# Pareto fronts (accuracy vs latency)\n"]
    for p in plots:
        data = p.read_bytes()
        if len(data) > max_bytes:
            parts.append(f"## {p.stem}\n\n`{p.name}` ({len(data)} bytes, too large to inline)\n")
            continue
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f"## {p.stem}\n\n![Pareto front {p.stem}](data:image/png;base64,{b64})\n")
    return "\n".join(parts)
