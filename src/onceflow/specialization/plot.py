"""plots/specialization.png: one panel per host target, every target's picks placed on it."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_MARKERS = "osD^vP*X"


def specialization_png(details: Mapping[str, Any], title: str) -> bytes:
    """Per host target: x = latency on the host (its estimator), y = accuracy under the host's
    precision; the host's own picks filled, other targets' picks hollow, budgets as lines."""
    targets = [t["name"] for t in details["targets"]]
    fig, axes = plt.subplots(
        1, len(targets), figsize=(4.6 * len(targets), 4.2), dpi=110, squeeze=False
    )
    colors = {n: f"C{i}" for i, n in enumerate(targets)}
    for ax, host in zip(axes[0], targets, strict=True):
        cells = [c for c in details["cells"] if c["host"] == host]
        budgets = sorted({c["host_budget_ms"] for c in cells})
        for b in budgets:
            ax.axvline(b, color="gray", lw=0.8, ls="--")
        own = {(c["slot"], c["host_pick_latency_ms"], c["host_pick_accuracy"]) for c in cells}
        ax.scatter(
            [o[1] for o in own],
            [o[2] if o[2] is not None else float("nan") for o in own],
            s=60,
            color=colors[host],
            marker=_MARKERS[targets.index(host) % len(_MARKERS)],
            label=f"{host} picks (own)",
            zorder=3,
        )
        for src in targets:
            if src == host:
                continue
            pts = [c for c in cells if c["source"] == src]
            ax.scatter(
                [c["source_latency_on_host_ms"] for c in pts],
                [
                    c["source_accuracy_on_host"]
                    if c["source_accuracy_on_host"] is not None
                    else float("nan")
                    for c in pts
                ],
                s=60,
                facecolors="none",
                edgecolors=colors[src],
                marker=_MARKERS[targets.index(src) % len(_MARKERS)],
                label=f"{src} picks",
                zorder=4,
            )
        ax.set_title(f"on {host}", fontsize=10)
        ax.set_xlabel(f"latency on {host} (ms, estimator)")
        ax.set_ylabel(f"test accuracy under {host}'s precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)  # the verdict is a sentence
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
