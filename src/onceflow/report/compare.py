"""The run next to a baseline run: every headline with the baseline's value and the difference.

:func:`headline_rows` lines two :class:`~onceflow.report.collect.RunOutputs` up figure by figure
(supernet top-1, each target's latency fidelity, the predictor's tau, each target's picks per
budget, the packaged and published models); :func:`comparison_section` renders them as one
table. Picks are paired by their budget's position in the target's budget list (a budget given
as a fraction of the latency range moves with the run), so the budget itself is a row too.
Pure: values in, rows or HTML out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onceflow.report.collect import RunOutputs
from onceflow.report.html import arch_cell, e, fmt, get, section

# A figure's direction: +1 higher is better, -1 lower is better, 0 neither (shown, not judged).
HIGHER, LOWER, NEUTRAL = 1, -1, 0


@dataclass(frozen=True)
class Compared:
    """One figure of both runs (``None`` where a run lacks it)."""

    group: str
    label: str
    current: Any
    baseline: Any
    kind: str = ""  # a :func:`~onceflow.report.html.fmt` kind: pct, ms, tau, s or ""
    better: int = NEUTRAL

    @property
    def delta(self) -> float | None:
        a, b = self.current, self.baseline
        if isinstance(a, bool) or isinstance(b, bool):
            return None
        if isinstance(a, int | float) and isinstance(b, int | float):
            d = float(a) - float(b)
            return d if math.isfinite(d) else None
        return None

    @property
    def verdict(self) -> str:
        """``better``, ``worse``, ``same`` or ``changed`` (no direction, or not numbers)."""
        if self.current == self.baseline:
            return "same"
        d = self.delta
        if d is None or self.better == NEUTRAL:
            return "changed"
        if abs(d) < 1e-12:
            return "same"
        return "better" if d * self.better > 0 else "worse"


def _pick(picks: Sequence[Mapping[str, Any]], i: int, key: str) -> Any:
    return picks[i].get(key) if i < len(picks) else None


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [x for x in value or [] if isinstance(x, Mapping)] if isinstance(value, list) else []


def _target_rows(name: str, cur: RunOutputs, base: RunOutputs) -> list[Compared]:
    a, b = cur.targets.get(name), base.targets.get(name)
    lat = (a.latency if a else None, b.latency if b else None)
    group = f"latency table {name}"
    rows = [
        Compared(group, "held-out within ±10%", *(get(x, "within_10pct") for x in lat), "pct",
                 HIGHER),
        Compared(group, "Kendall τ (held-out)", *(get(x, "kendall_tau") for x in lat), "tau",
                 HIGHER),
        Compared(group, "MAPE (held-out)", *(get(x, "mape") for x in lat), "pct", LOWER),
    ]  # fmt: skip
    sa = _mappings(get(a.search if a else None, "selected"))
    sb = _mappings(get(b.search if b else None, "selected"))
    pa = _mappings(get(a.package if a else None, "packages"))
    pb = _mappings(get(b.package if b else None, "packages"))
    for i in range(max(len(sa), len(sb))):
        g = f"pick {name} · budget {i + 1} of {max(len(sa), len(sb))}"
        rows += [
            Compared(g, "budget", _pick(sa, i, "budget_ms"), _pick(sb, i, "budget_ms"), "ms"),
            Compared(g, "predicted top-1", _pick(sa, i, "predicted_accuracy"),
                     _pick(sb, i, "predicted_accuracy"), "pct", HIGHER),
            Compared(g, "measured top-1 (val)", _pick(sa, i, "real_accuracy"),
                     _pick(sb, i, "real_accuracy"), "pct", HIGHER),
            Compared(g, "predicted latency", _pick(sa, i, "predicted_latency_ms"),
                     _pick(sb, i, "predicted_latency_ms"), "ms", LOWER),
            Compared(g, "package test top-1", _pick(pa, i, "test_accuracy"),
                     _pick(pb, i, "test_accuracy"), "pct", HIGHER),
            Compared(g, "package measured latency", _pick(pa, i, "latency_ms"),
                     _pick(pb, i, "latency_ms"), "ms", LOWER),
            Compared(g, "subnet", _pick(sa, i, "arch") or _pick(pa, i, "arch"),
                     _pick(sb, i, "arch") or _pick(pb, i, "arch")),
        ]  # fmt: skip
    pkg = (a.package if a else None, b.package if b else None)
    g = f"packages {name}"
    rows += [
        Compared(g, "models packaged", *(get(x, "models") for x in pkg), "", NEUTRAL),
        Compared(g, "best test top-1", *(get(x, "top1") for x in pkg), "pct", HIGHER),
        Compared(g, "parity passed", *(get(x, "passed") for x in pkg)),
    ]
    return rows


def headline_rows(cur: RunOutputs, base: RunOutputs) -> list[Compared]:
    """Every headline figure of ``cur`` and ``base``; rows neither run has are left out."""
    s, sb = cur.supernet, base.supernet
    p, pb = cur.predictor, base.predictor
    rows = [
        Compared("data", "images", get(cur.data, "images"), get(base.data, "images")),
        Compared("data", "gate passed", get(cur.data, "passed"), get(base.data, "passed")),
        Compared("supernet", "val top-1, largest subnet", get(s, "val_acc_max"),
                 get(sb, "val_acc_max"), "pct", HIGHER),
        Compared("supernet", "val top-1, middle subnet", get(s, "val_acc_mid"),
                 get(sb, "val_acc_mid"), "pct", HIGHER),
        Compared("supernet", "val top-1, smallest subnet", get(s, "val_acc_min"),
                 get(sb, "val_acc_min"), "pct", HIGHER),
        Compared("supernet", "epochs", get(s, "epochs"), get(sb, "epochs")),
        Compared("supernet", "training time", get(s, "train_seconds"), get(sb, "train_seconds"),
                 "s", LOWER),
        Compared("predictor", "Kendall τ (held-out)", get(p, "kendall_tau"),
                 get(pb, "kendall_tau"), "tau", HIGHER),
        Compared("predictor", "label-noise ceiling", get(p, "ceiling"), get(pb, "ceiling"),
                 "tau"),
        Compared("predictor", "subnets measured", get(p, "n_samples"), get(pb, "n_samples")),
        Compared("predictor", "chosen model", get(p, "model"), get(pb, "model")),
    ]  # fmt: skip
    for name in list(cur.targets) + [t for t in base.targets if t not in cur.targets]:
        rows += _target_rows(name, cur, base)
    spec = (cur.specialization, base.specialization)
    rows.append(
        Compared("specialization", "mean gain of a target's own pick (pp)",
                 *(get(x, "gain_pp") for x in spec), "", HIGHER)
    )  # fmt: skip
    pub = (cur.publish, base.publish)
    rows += [
        Compared("published", "models in the registry", *(get(x, "models") for x in pub)),
        Compared("published", "newly published", *(get(x, "n_published") for x in pub)),
    ]
    return [r for r in rows if r.current is not None or r.baseline is not None]


def fmt_delta(r: Compared) -> str:
    """The change as a reader wants it: points for accuracies, ms and % for latencies."""
    if r.current is None:
        return "only in baseline"
    if r.baseline is None:
        return "new"
    if r.current == r.baseline:
        return "same"
    d = r.delta
    if d is None:
        return "changed"
    if r.kind == "pct":
        return f"{100 * d:+.2f} pp"
    rel = f" ({d / r.baseline:+.0%})" if r.baseline else ""
    if r.kind == "ms":
        return f"{d:+.3f} ms{rel}"
    if r.kind == "s":
        return f"{d:+,.1f} s{rel}"
    if r.kind == "tau":
        return f"{d:+.3f}"
    return f"{int(d):+,}" if float(d).is_integer() else f"{d:+.4g}"


def _cell(v: Any, kind: str, label: str) -> str:
    return arch_cell(v) if label == "subnet" else e(fmt(v, kind))


def comparison_section(cur: RunOutputs, base: RunOutputs, name: str) -> str:
    """The ``comparison`` section: one row per figure, grouped, baseline ``name``."""
    rows = headline_rows(cur, base)
    if not rows:
        return section(
            "comparison",
            "missing",
            f'<p class="missing-note">The baseline <code>{e(name)}</code> has no metrics under '
            "<code>metrics/</code> (a commit before metrics were committed?).</p>",
        )
    counts = {v: sum(r.verdict == v for r in rows) for v in ("better", "worse", "changed")}
    out, group = [], None
    for r in rows:
        if r.group != group:
            out.append(f'<tr class="group"><th colspan="4">{e(r.group)}</th></tr>')
        group = r.group
        out.append(
            f'<tr class="{r.verdict}"><td>{e(r.label)}</td>'
            f'<td class="num">{_cell(r.current, r.kind, r.label)}</td>'
            f'<td class="num">{_cell(r.baseline, r.kind, r.label)}</td>'
            f'<td class="num delta">{e(fmt_delta(r))}</td></tr>'
        )
    commit = str(base.git.get("commit") or "")
    intro = (
        f"<p>This run against <code>{e(name)}</code>"
        + (f" (commit <code>{e(commit[:10])}</code>)" if commit else "")
        + f": {counts['better']} figures better, {counts['worse']} worse, "
        f"{counts['changed']} changed without a direction (green: better, red: worse).</p>"
    )
    table = (
        '<table class="compare"><tr><th>figure</th><th>this run</th>'
        f"<th>baseline</th><th>change</th></tr>{''.join(out)}</table>"
    )
    return section("comparison", "ok", intro + table, f"vs {name}")
