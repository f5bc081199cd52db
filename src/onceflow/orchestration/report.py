"""What the flow shows people: the published models and the Pareto plots, as markdown/table data.

Pure readers of the pipeline's outputs (package manifests ``artifacts/<target>/<id>/manifest.json``,
``metrics/publish.json``, ``plots/search/<target>.png``); the flow turns them into Prefect
artifacts. Missing files mean "nothing published yet", never an error.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from onceflow.metrics import read_metrics


@dataclass(frozen=True)
class PublishedModel:
    target: str
    model_id: str
    accuracy: float | None  # test top-1 in [0, 1]
    latency_ms: float | None  # measured on the target
    uri: str  # where `onceflow pull` finds it ("" if not published)

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _latency(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("measured")
    return float(value) if isinstance(value, int | float) else None


def _registry_uris(publish: Any) -> tuple[str, dict[tuple[str, str], str]]:
    """Registry root and per-model URIs from metrics/publish.json (tolerant of its layout)."""
    if not isinstance(publish, dict):
        return "", {}
    root = str(publish.get("registry") or publish.get("registry_uri") or "")
    per_model: dict[tuple[str, str], str] = {}
    for key in ("packages", "published", "models"):
        items = publish.get(key)
        for item in items if isinstance(items, list) else []:  # headline "models" is a count
            if isinstance(item, dict) and "target" in item and "model_id" in item:
                uri = item.get("uri") or (
                    f"{root.rstrip('/')}/{item['target']}/{item['model_id']}" if root else ""
                )
                per_model[(str(item["target"]), str(item["model_id"]))] = str(uri)
    return root, per_model


def published_models(root: str | os.PathLike[str]) -> list[PublishedModel]:
    """One entry per packaged model, with its registry URI once `publish` has run."""
    root = Path(root)
    registry, uris = _registry_uris(read_metrics(root / "metrics" / "publish.json"))
    out = []
    for path in sorted((root / "artifacts").glob("*/*/manifest.json")):
        m = _read(path)
        if not isinstance(m, dict):
            continue
        target = str(m.get("target", path.parent.parent.name))
        mid = str(m.get("model_id", path.parent.name))
        acc = m.get("test_accuracy", m.get("accuracy"))
        uri = uris.get((target, mid)) or (
            f"{registry.rstrip('/')}/{target}/{mid}" if registry else ""
        )
        out.append(
            PublishedModel(
                target,
                mid,
                float(acc) if isinstance(acc, int | float) else None,
                _latency(m.get("latency_ms")),
                uri,
            )
        )
    return out


def models_markdown(models: list[PublishedModel], run_label: str = "") -> str:
    """A markdown table of the models (target, accuracy, latency, registry URI)."""
    head = f"# Published models{f' — {run_label}' if run_label else ''}\n\n"
    if not models:
        return head + "_No packaged models yet._\n"
    lines = ["| target | model | top-1 | latency (ms) | registry URI |", "|---|---|---|---|---|"]
    for m in models:
        acc = f"{m.accuracy:.2%}" if m.accuracy is not None else "–"
        lat = f"{m.latency_ms:.3f}" if m.latency_ms is not None else "–"
        lines.append(f"| {m.target} | `{m.model_id}` | {acc} | {lat} | {m.uri or '–'} |")
    return head + "\n".join(lines) + "\n"


def pareto_markdown(root: str | os.PathLike[str], max_bytes: int = 2_000_000) -> str | None:
    """Markdown with each target's Pareto plot inlined (PNG data URI), or None if none exist."""
    plots = sorted((Path(root) / "plots" / "search").glob("*.png"))
    if not plots:
        return None
    parts = ["# Pareto fronts (accuracy vs latency)\n"]
    for p in plots:
        data = p.read_bytes()
        if len(data) > max_bytes:
            parts.append(f"## {p.stem}\n\n`{p}` ({len(data)} bytes, too large to inline)\n")
            continue
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f"## {p.stem}\n\n![Pareto front {p.stem}](data:image/png;base64,{b64})\n")
    return "\n".join(parts)
