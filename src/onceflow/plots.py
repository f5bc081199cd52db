"""Every figure the pipeline draws, and the plotted points as data for ``dvc plots``.

matplotlib is set up here once (the Agg backend: no display, imported only when a figure is
drawn) and every renderer ends in :func:`to_png`. Renderers take plain numbers that the packages
shape (records, arrays, the details documents); nothing here knows a supernet, a search result
or a predictor, so importing this module pulls no other part of onceflow into a stage.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
MAX_PNG_PX = 1270  # widest figure: fits the report's 1280 px page
_MARKERS = "osD^vP*X"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig: Figure) -> bytes:
    """Lay ``fig`` out, render it to PNG bytes and free it."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


def rows_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The plotted points as CSV (``columns`` of each row; None and NaN as empty cells), the
    form ``dvc plots`` reads beside each PNG."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(columns)
    for row in rows:
        out.writerow(_cell(row.get(c)) for c in columns)
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def latency_png(records: Sequence[Mapping[str, Any]], title: str) -> bytes:
    """Predicted (y) vs measured (x) latency of a table's calibration and validation subnets,
    y = x with a ±10% band."""
    fig, ax = pyplot().subplots(figsize=(5.2, 5.0), dpi=DPI)
    lo = min(min(r["measured_ms"], r["predicted_ms"]) for r in records) * 0.9
    hi = max(max(r["measured_ms"], r["predicted_ms"]) for r in records) * 1.1
    xs = [lo, hi]
    ax.plot(xs, xs, color="black", lw=1, label="y = x")
    ax.fill_between(
        xs, [x * 0.9 for x in xs], [x * 1.1 for x in xs], color="gray", alpha=0.2, label="±10%"
    )
    for role, marker, color in (
        ("calibration", "s", "tab:orange"),
        ("validation", "o", "tab:blue"),
    ):
        pts = [r for r in records if r["role"] == role]
        ax.scatter(
            [r["measured_ms"] for r in pts],
            [r["predicted_ms"] for r in pts],
            s=16,
            marker=marker,
            color=color,
            label=f"{role} ({len(pts)})",
            alpha=0.8,
        )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return to_png(fig)


def pareto_png(
    random: tuple[Sequence[float], Sequence[float]],
    n_sampled: int,
    front: tuple[Sequence[float], Sequence[float]],
    picks: Sequence[Mapping[str, Any]],
    title: str,
) -> bytes:
    """Search results: (latency ms, accuracy fraction) of the drawn random samples (out of
    ``n_sampled``) and of the front, fastest first; per pick its ``budget``, ``latency``,
    ``accuracy`` and, when measured, ``real_accuracy``."""
    fig, ax = pyplot().subplots(figsize=(7, 4.5), dpi=DPI)
    ax.scatter(
        random[0],
        [100 * a for a in random[1]],
        s=4,
        c="0.7",
        label=f"uniform random ({n_sampled} sampled, predicted)",
    )
    ax.plot(
        front[0],
        [100 * a for a in front[1]],
        "-o",
        ms=2.5,
        lw=1,
        c="tab:blue",
        label=f"NSGA-II front ({len(front[0])})",
    )
    for i, p in enumerate(picks):
        ax.axvline(p["budget"], c="tab:red", lw=0.6, ls="--")
        first = i == 0
        ax.plot(
            p["latency"],
            100 * p["accuracy"],
            "*",
            ms=11,
            c="tab:red",
            label="selected (predicted)" if first else None,
        )
        if p.get("real_accuracy") is not None:
            ax.plot(
                p["latency"],
                100 * p["real_accuracy"],
                "x",
                ms=8,
                c="k",
                label="selected (measured)" if first else None,
            )
    ax.set_xlabel("latency (ms, estimated)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return to_png(fig)


def learning_curve_png(
    curve: Mapping[str, Sequence[tuple[int, float]]],
    chosen: str,
    n_holdout: int,
    tau_ceiling: float | None = None,
) -> bytes:
    """Held-out Kendall tau against training samples, one line per model kind (the chosen one
    solid), the 0.9 target and the label-noise ceiling when known."""
    fig, ax = pyplot().subplots(figsize=(6, 4), dpi=DPI)
    for kind, pts in curve.items():
        n, tau = zip(*pts, strict=True) if pts else ((), ())
        style = "-o" if kind == chosen else "--o"
        ax.plot(n, tau, style, ms=3, label=f"{kind}{' (chosen)' if kind == chosen else ''}")
    ax.axhline(0.9, c="0.5", lw=0.7, ls=":", label="target tau 0.9")
    if tau_ceiling is not None:
        ax.axhline(tau_ceiling, c="C3", lw=0.8, ls="--", label="label-noise ceiling")
    ax.set_xlabel("training subnets")
    ax.set_ylabel(f"Kendall tau on {n_holdout} held-out subnets")
    ax.set_title("accuracy predictor learning curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def holdout_png(
    label_pct: Sequence[float],
    predicted_pct: Sequence[float],
    legend: str,
    tau_ceiling: float | None = None,
) -> bytes:
    """A predictor's held-out predictions (y) against their labels (x), in accuracy %."""
    fig, ax = pyplot().subplots(figsize=(6, 4), dpi=DPI)
    ax.plot(label_pct, predicted_pct, "o", ms=4, label=legend)
    lo = float(min(min(label_pct), min(predicted_pct)))
    hi = float(max(max(label_pct), max(predicted_pct)))
    ax.plot([lo, hi], [lo, hi], c="0.5", lw=0.7, ls=":")
    ax.set_xlabel("label (accuracy %, held out)")
    ax.set_ylabel("predicted accuracy (%)")
    title = "accuracy predictor on held-out subnets"
    if tau_ceiling is not None:
        title += f" (tau ceiling {tau_ceiling:.3f})"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)


def specialization_png(
    targets: Sequence[str],
    budgets: Mapping[str, Sequence[float]],
    points: Sequence[Mapping[str, Any]],
    title: str,
) -> bytes:
    """One panel per host target: its budgets as lines and the ``points`` placed on it (``host``,
    ``source``, ``latency_ms``, ``accuracy``); the host's own picks filled, other targets'
    hollow, one color and marker per source target."""
    # At most 3 panels a row, the figure at most MAX_PNG_PX wide (the report's 1280 px page).
    ncols = min(len(targets), 3)
    nrows = -(-len(targets) // ncols)
    panel_in = min(4.6, MAX_PNG_PX / DPI / ncols)
    fig, axes = pyplot().subplots(
        nrows, ncols, figsize=(panel_in * ncols, 4.2 * nrows), dpi=DPI, squeeze=False
    )
    for ax in axes.flat[len(targets) :]:
        ax.set_visible(False)
    colors = {n: f"C{i}" for i, n in enumerate(targets)}

    def nan(v: float | None) -> float:
        return float("nan") if v is None else v

    for ax, host in zip(axes.flat, targets, strict=False):
        for b in budgets.get(host, ()):
            ax.axvline(b, color="gray", lw=0.8, ls="--")
        for src in [host, *(t for t in targets if t != host)]:  # own picks first
            pts = [p for p in points if p["host"] == host and p["source"] == src]
            own = src == host
            ax.scatter(
                [p["latency_ms"] for p in pts],
                [nan(p["accuracy"]) for p in pts],
                s=60,
                marker=_MARKERS[targets.index(src) % len(_MARKERS)],
                label=f"{src} picks (own)" if own else f"{src} picks",
                zorder=3 if own else 4,
                **(
                    {"color": colors[src]}
                    if own
                    else {"facecolors": "none", "edgecolors": colors[src]}
                ),
            )
        ax.set_title(f"on {host}", fontsize=10)
        ax.set_xlabel(f"latency on {host} (ms, estimator)")
        ax.set_ylabel(f"test accuracy under {host}'s precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)  # the verdict is a sentence
    return to_png(fig)


def training_curves(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Two panels per epoch record: training losses, and val accuracy of the max/min subnets.
    A Figure (DVCLive's ``log_image`` takes one), not PNG bytes."""
    ep = [r["epoch"] for r in records]
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("train_loss_max", "max subnet (CE)"),
        ("train_loss_distill", "others (distill)"),
    ):
        a.plot(ep, [r.get(key, float("nan")) for r in records], marker="o", label=label)
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    a.legend()
    for key, label in (("val_acc_max", "max subnet"), ("val_acc_min", "min subnet")):
        if any(key in r for r in records):
            b.plot(ep, [r.get(key, float("nan")) for r in records], marker="o", label=label)
    b.set_xlabel("epoch")
    b.set_ylabel("val accuracy (BN recalibrated, subset)")
    b.legend()
    fig.tight_layout()
    return fig
