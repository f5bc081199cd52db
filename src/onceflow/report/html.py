"""HTML building blocks of the run report: the section list, the CSS, tables, embedded figures.

Pure: values in, strings out. No scripts, no external CSS, fonts or images: figures are
embedded as ``data:`` URIs, so the page reads the same offline, attached to a mail or opened
from a CI artifact. Every section has a fixed ``id`` and ``data-status`` (``ok``, ``failed`` or
``missing``) and, when its inputs are absent, says which file is missing and which stage
makes it.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from onceflow.report.collect import Figure

# (id, title) of every section, in page order: the browser test checks them all.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("data-gate", "Data gate"),
    ("training", "Supernet training"),
    ("latency", "Latency tables"),
    ("predictor", "Accuracy predictor"),
    ("search", "Search: Pareto fronts"),
    ("specialization", "Specialization"),
    ("models", "Published models"),
)
# Shown only when the page compares the run with a baseline (``onceflow report --baseline``),
# right after the summary.
COMPARISON: tuple[str, str] = ("comparison", "Compared with the baseline")
_TITLES = dict((*SECTIONS, COMPARISON))

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1d232b;background:#f6f7f9;margin:0}
header{background:#1f3a5f;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.9}
nav{margin-top:10px}
nav a{color:#cfe3ff;margin-right:14px;text-decoration:none}
header code{background:rgba(255,255,255,.15);color:#fff}
main{max-width:1120px;margin:0 auto;padding:8px 24px 40px}
section,details{min-width:0;max-width:100%}
section{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:18px 0;
 padding:14px 20px}
section h2{margin:4px 0 10px;font-size:20px}
section h3{margin:16px 0 6px;font-size:16px}
.badge{display:inline-block;font-size:12px;font-weight:600;border-radius:10px;
 padding:1px 9px;margin-left:8px;vertical-align:middle}
.ok{background:#dff3e4;color:#176b2c}.failed{background:#fde2e1;color:#9b1c1c}
.missing{background:#eceff3;color:#55606e}
p.missing-note{color:#55606e;background:#f3f5f8;border-left:4px solid #b8c1cc;
 padding:8px 12px;margin:8px 0}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #e3e7ec;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f1f4f7;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td code,td:first-child{white-space:nowrap}
th{white-space:normal}
td small{overflow-wrap:anywhere}
details.lineage table td{overflow-wrap:anywhere}
details.lineage table td code{white-space:normal;word-break:break-all}
tr.bad td{background:#fff1f0}
table{max-width:100%}
.arch{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
td .arch{white-space:nowrap}
details.arch-full code{word-break:break-all;white-space:normal}
table.compare tr.group th{background:#e8edf3;text-align:left;font-size:13px;color:#2b3a4d}
table.compare tr.better td.delta{background:#dff3e4;color:#176b2c}
table.compare tr.worse td.delta{background:#fde2e1;color:#9b1c1c}
table.compare tr.changed td.delta{background:#fff6dd}
table.compare td.delta{font-weight:600}
table.compare tr.same td{color:#6b7785}
figure{margin:10px 0}
figure img{max-width:100%;height:auto;border:1px solid #e3e7ec;border-radius:4px}
figcaption{font-size:12px;color:#55606e}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 180px;border:1px solid #dde2e8;border-radius:8px;padding:10px 14px}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#55606e}
.grid{display:flex;flex-wrap:wrap;gap:16px}.grid>div{flex:1 1 460px}
code{font-size:13px;background:#f1f4f7;padding:0 3px;border-radius:3px}
details summary{cursor:pointer;color:#1f3a5f}
footer{text-align:center;color:#55606e;font-size:12px;padding:10px}
"""

e = html.escape


def fmt(v: Any, kind: str = "") -> str:
    """A value for a table cell: ``pct`` as a percentage, floats with 4 significant digits."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float) and not math.isfinite(float(v)):
        return "–"
    if kind == "pct" and isinstance(v, int | float):
        return f"{100.0 * v:.2f}%"
    if kind == "ms" and isinstance(v, int | float):
        return f"{v:.3f} ms"
    if kind == "tau" and isinstance(v, int | float):
        return f"{v:.3f}"
    if kind == "s" and isinstance(v, int | float):
        return f"{v:,.1f} s"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list | tuple) and all(isinstance(x, int | float) for x in v):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def get(d: Mapping[str, Any] | None, path: str) -> Any:
    """``get(d, "label_noise.tau_ceiling")``: a nested value or None."""
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def img(fig: Figure | None, alt: str) -> str:
    if fig is None:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(fig.png).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{e(alt)}"><figcaption>{e(fig.source)}</figcaption></figure>'
    )


def missing(what: str, path: str, stage: str) -> str:
    return (
        f'<p class="missing-note">No {e(what)} in this run: <code>{e(path)}</code> is missing '
        f"(made by <code>{e(stage)}</code>; run <code>dvc repro {e(stage)}</code>).</p>"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[str]], bad: Sequence[bool] = ()) -> str:
    """An HTML table; cells are pre-rendered HTML (escape before), numbers right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="bad"' if i < len(bad) and bad[i] else ""
        cells = "".join(
            f'<td class="num">{c}</td>' if _numeric(c) else f"<td>{c}</td>" for c in row
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    return "".join(out) + "</table>"


def _numeric(cell: str) -> bool:
    s = cell.replace(",", "").replace("%", "").replace(" ms", "").replace(" s", "")
    try:
        float(s)
    except ValueError:
        return False
    return True


Row = tuple[str, str, str]  # (label, key path, format kind)


def kv_table(d: Mapping[str, Any] | None, rows: Sequence[Row]) -> str:
    """Two columns (figure, value) for the rows of ``rows`` that ``d`` has."""
    body = [
        (e(label), e(fmt(get(d, key), kind)))
        for label, key, kind in rows
        if get(d, key) is not None
    ]
    return table(("figure", "value"), body) if body else ""


def scalars_table(d: Mapping[str, Any] | None, skip: Iterable[str] = ()) -> str:
    """Every top-level scalar of ``d`` (for inputs whose schema this page does not know)."""
    if not d:
        return ""
    skipped = set(skip)
    body = [
        (e(k), e(fmt(v)))
        for k, v in d.items()
        if k not in skipped and (v is None or isinstance(v, bool | int | float | str))
    ]
    return table(("figure", "value"), body) if body else ""


def badge(status: str, text: str | None = None) -> str:
    return f'<span class="badge {status}">{e(text or status)}</span>'


def section(sid: str, status: str, body: str, note: str = "") -> str:
    title = _TITLES[sid]
    return (
        f'<section id="{sid}" data-status="{status}"><h2>{e(title)}'
        f"{badge(status, note or None)}</h2>{body}</section>"
    )


def short_arch(arch: str, width: int = 24) -> str:
    """A subnet's arch string cut to its first parts (resolution, depths, widths), e.g.
    ``r24-d2_1-w1_0.5…``: the per-block kernels and expands make the full string too wide for
    a table cell."""
    parts = arch.split("-")
    short = "-".join(parts[:3]) if len(parts) > 3 else arch
    if len(short) > width:
        short = short[: width - 1]
    return short + "…" if short != arch else arch


def arch_cell(arch: Any) -> str:
    """An arch for a table cell: shortened, the full string on hover (``title``)."""
    if not isinstance(arch, str) or not arch:
        return e(fmt(arch))
    return f'<span class="arch" title="{e(arch)}">{e(short_arch(arch))}</span>'
