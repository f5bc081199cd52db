"""The run report: one self-contained HTML page (``reports/run.html``) per pipeline run.

``collect_run`` reads what the stages wrote (metrics with their details, plots, validation
report, package manifests); ``render_html`` turns that into a page that needs no network.
``write_report`` does both and writes the page atomically; the ``report`` stage and the
``onceflow report`` command call it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from onceflow.io import write_text_atomic
from onceflow.report.collect import ReportPaths, RunOutputs, collect_run
from onceflow.report.html import SECTIONS
from onceflow.report.page import render_html

__all__ = ["SECTIONS", "ReportPaths", "RunOutputs", "collect_run", "render_html", "write_report"]


def write_report(
    root: str | os.PathLike[str], out: str | os.PathLike[str], paths: ReportPaths | None = None
) -> Path:
    """Collect the run at ``root`` and write its page to ``out``; returns ``out``."""
    run = collect_run(root, paths)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return write_text_atomic(out, render_html(run, stamp))
