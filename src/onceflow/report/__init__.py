"""The run report: one self-contained HTML page (``reports/run.html``) per pipeline run.

``collect_run`` reads what the stages wrote (metrics with their details, plots, validation
report, package manifests); ``render_html`` turns that into a page that needs no network.
``report_html`` does both (the ``report`` stage writes what it returns); ``write_report`` also
writes the page atomically (the ``onceflow report`` command).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from onceflow.io import write_text_atomic
from onceflow.report.collect import ReportPaths, RunOutputs, collect_run
from onceflow.report.html import SECTIONS
from onceflow.report.page import render_html

__all__ = [
    "SECTIONS",
    "ReportPaths",
    "RunOutputs",
    "collect_run",
    "render_html",
    "report_html",
    "write_report",
]


def report_html(root: str | os.PathLike[str], paths: ReportPaths | None = None) -> str:
    """The page of the run at ``root``, stamped with the current UTC time."""
    run = collect_run(root, paths)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return render_html(run, stamp)


def write_report(
    root: str | os.PathLike[str], out: str | os.PathLike[str], paths: ReportPaths | None = None
) -> Path:
    """Collect the run at ``root`` and write its page to ``out``; returns ``out``."""
    return write_text_atomic(out, report_html(root, paths))
