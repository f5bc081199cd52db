"""The run report: one self-contained HTML page (``reports/run.html``) per pipeline run.

``collect_run`` reads what the stages wrote (metrics with their details, plots, validation
report, package manifests); ``render_html`` turns that into a page that needs no network.
``report_html`` does both (the ``report`` stage writes what it returns); ``write_report`` also
writes the page atomically (the ``onceflow report`` command). With a ``baseline`` (a git
revision or a DVC experiment's name, :mod:`onceflow.report.baseline`) the page also shows every
headline next to the baseline's (:mod:`onceflow.report.compare`).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from onceflow.io import write_text_atomic
from onceflow.report.baseline import collect_baseline
from onceflow.report.collect import ReportPaths, RunOutputs, collect_run
from onceflow.report.html import SECTIONS
from onceflow.report.page import render_html

__all__ = [
    "SECTIONS",
    "ReportPaths",
    "RunOutputs",
    "collect_baseline",
    "collect_run",
    "render_html",
    "report_html",
    "write_report",
]


def report_html(
    root: str | os.PathLike[str], paths: ReportPaths | None = None, baseline: str | None = None
) -> str:
    """The page of the run at ``root``, stamped with the current UTC time; compared with the
    run recorded at git revision or experiment ``baseline`` when given."""
    run = collect_run(root, paths)
    base = collect_baseline(root, baseline, paths) if baseline else None
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return render_html(run, stamp, base)


def write_report(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    paths: ReportPaths | None = None,
    baseline: str | None = None,
) -> Path:
    """Collect the run at ``root`` (and ``baseline``) and write its page to ``out``."""
    return write_text_atomic(out, report_html(root, paths, baseline))
