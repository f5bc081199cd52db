"""The report's specialization section: every target's picks placed on every other target.

Reads ``metrics/specialization.details.json`` (written by
:mod:`onceflow.specialization.report`) and lays it out as designed tables: the verdict, one
row per target and budget (its pick), one row per (host, pick of another target, budget)
with latency against the host's budget and accuracy against the host's own pick, the pairs'
summaries, the targets' latency rank correlation and the int8 drops. Arch strings are
shortened (the full string on hover); nothing is dumped raw. Pure: values in, HTML out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onceflow.report.collect import RunOutputs
from onceflow.report.html import arch_cell, e, fmt, get, img, kv_table, section, table

SUMMARY_ROWS = (
    ("targets compared", "n_targets", ""),
    ("budgets per target", "n_slots", ""),
    ("picks placed on another target", "cases", ""),
    ("mean gain of a target's own pick (points)", "gain_pp", ""),
    ("picks over another target's budget", "budget_violations", ""),
    ("foreign picks within budget but less accurate", "foreign_within_budget_less_accurate", ""),
    ("foreign picks within budget and as accurate", "foreign_within_budget_as_accurate", ""),
)


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [x for x in value if isinstance(x, Mapping)] if isinstance(value, list) else []


def _ms(v: Any) -> str:
    return e(fmt(v, "ms"))


def picks_table(s: Mapping[str, Any]) -> str:
    """One row per target and budget: the subnet it picked."""
    rows = []
    for t in _rows(s.get("targets")):
        for i, slot in enumerate(_rows(t.get("slots"))):
            rows.append(
                [e(str(t.get("name", ""))), e(str(t.get("precision", "") or "–")), str(i + 1),
                 _ms(slot.get("budget_ms")), arch_cell(slot.get("arch"))]
            )  # fmt: skip
    return table(("target", "precision", "budget #", "budget", "pick"), rows) if rows else ""


def cells_table(s: Mapping[str, Any]) -> str:
    """One row per (host target, pick of another target, budget): does it fit the host's budget,
    and how does it compare with the host's own pick?"""
    rows, bad = [], []
    for c in sorted(
        _rows(s.get("cells")),
        key=lambda c: (str(c.get("host")), int(c.get("slot") or 0), str(c.get("source"))),
    ):
        over = c.get("over_budget_pct")
        fits = c.get("within_budget")
        same = bool(c.get("same_arch"))
        lat = f"{fmt(c.get('source_latency_on_host_ms'), 'ms')}"
        measured = c.get("source_measured_on_host_ms")
        if measured is not None:
            lat += f" / {fmt(measured, 'ms')}"
        slot = int(c.get("slot") or 0) + 1
        rows.append(
            [
                e(str(c.get("host", ""))),
                e(str(c.get("source", ""))),
                f"#{slot}: {_ms(c.get('host_budget_ms'))}",
                e(lat),
                e("–" if over is None else f"{over:+.1f}%") + ("" if fits is not False else " ✗"),
                e(fmt(c.get("source_accuracy_on_host"), "pct"))
                + f" <small>({e(fmt(c.get('host_pick_accuracy'), 'pct'))})</small>",
                e(fmt(c.get("specialization_gain_pp"))),
                "same subnet" if same else arch_cell(c.get("source_arch")),
            ]
        )
        bad.append(fits is False)
    if not rows:
        return ""
    header = (
        "on host", "pick of", "host budget", "latency est. / measured", "vs budget",
        "top-1 on host (host's own pick)", "gain (pp)", "subnet",
    )  # fmt: skip
    return table(header, rows, bad)


def pairs_table(s: Mapping[str, Any]) -> str:
    pairs = s.get("pairs")
    if not isinstance(pairs, Mapping):
        return ""
    rows = []
    for name, p in pairs.items():
        if not isinstance(p, Mapping):
            continue
        src, _, host = str(name).partition("->")
        rows.append(
            [e(src), e(host or "–"), e(fmt(p.get("same_picks"))),
             e(fmt(p.get("budget_violations"))), e(fmt(p.get("measured_latency_ratio_mean"))),
             e(fmt(p.get("max_over_budget_pct"))), e(fmt(p.get("mean_gain_pp"))),
             e(fmt(p.get("max_gain_pp")))]
        )  # fmt: skip
    header = (
        "picks of", "on host", "same picks", "over budget", "latency ratio (mean)",
        "max over budget (%)", "mean gain (pp)", "max gain (pp)",
    )  # fmt: skip
    return table(header, rows) if rows else ""


def correlation_table(s: Mapping[str, Any]) -> str:
    corr = s.get("latency_rank_correlation")
    if not isinstance(corr, Mapping):
        return ""
    rows = [
        [e(str(k).replace("|", " vs ")), e(fmt(v.get("n"))), e(fmt(v.get("kendall_tau"), "tau")),
         e(fmt(v.get("spearman"), "tau"))]
        for k, v in corr.items()
        if isinstance(v, Mapping)
    ]  # fmt: skip
    return table(("targets", "subnets", "Kendall τ", "Spearman ρ"), rows) if rows else ""


def drops_table(s: Mapping[str, Any]) -> str:
    drops = s.get("quantization_drop_pp")
    if not isinstance(drops, Mapping):
        return ""
    rows = [
        [e(str(k)), e(fmt(v.get("mean_pp"))), e(fmt(v.get("max_pp"))), e(fmt(v.get("n")))]
        for k, v in drops.items()
        if isinstance(v, Mapping)
    ]
    header = ("int8 target", "mean drop (pp)", "max drop (pp)", "packages")
    return table(header, rows) if rows else ""


def evaluated_table(s: Mapping[str, Any]) -> str:
    rows = [
        [arch_cell(x.get("arch")), e(str(x.get("precision", "–")))]
        for x in _rows(s.get("evaluated_here"))
    ]
    return table(("subnet", "precision"), rows) if rows else ""


def specialization_section(run: RunOutputs) -> str:
    n = len(run.targets)
    s, plot = run.specialization, run.specialization_plot
    if s is None and plot is None:
        why = (
            f"it compares subnets across targets, and this run has {n}; add targets under "
            "<code>latency.targets</code> in params.yaml"
            if n < 2
            else "<code>metrics/specialization.json</code> is missing (run <code>dvc repro</code>)"
        )
        return section(
            "specialization",
            "missing",
            f'<p class="missing-note">No specialization matrix: {why}.</p>',
        )
    s = dict(s or {})
    if isinstance(s.get("target_names"), list):
        s["n_targets"] = len(s["target_names"])
    verdict = get(s, "verdict")
    intro = (
        "<p>Each target's pick placed on every other target: latency on the host (its "
        "estimator; measured where the host runs here) against the host's budget, accuracy "
        "under the host's precision against the host's own pick.</p>"
        + (f"<p><b>Verdict:</b> {e(str(verdict))}</p>" if verdict else "")
    )
    parts = [
        ("", kv_table(s, SUMMARY_ROWS)),
        ("Picks per target and budget", picks_table(s)),
        ("Each pick on the other targets", cells_table(s)),
        ("Per pair of targets", pairs_table(s)),
        ("Latency rank correlation between targets", correlation_table(s)),
        ("int8 accuracy drop of the packaged picks", drops_table(s)),
        ("Accuracies measured by this stage", evaluated_table(s)),
    ]
    body = "".join((f"<h3>{e(h)}</h3>" if h else "") + t for h, t in parts if t)
    figure = img(plot, "specialization matrix")
    return section("specialization", "ok", intro + figure + body)
