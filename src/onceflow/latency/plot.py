"""Predicted-vs-measured scatter of a latency table's calibration and validation subnets."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def scatter_png(records: Sequence[dict], title: str) -> bytes:
    """PNG bytes: predicted (y) vs measured (x) latency, y = x with a ±10% band."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
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
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
