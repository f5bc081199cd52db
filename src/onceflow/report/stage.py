"""The ``report`` stage as one call (:func:`run`): the run's page from what the stages wrote
(:func:`~onceflow.report.report_html`), written by the stage contract to ``--out``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onceflow.config import Params
from onceflow.report import report_html
from onceflow.report.collect import ReportPaths

Paths = ReportPaths  # where the report reads: the stage's options, one per field


@dataclass(frozen=True)
class ReportPage:
    """What the ``report`` stage writes: the page (``--out``); no metrics of its own."""

    html: str
    headline: dict[str, Any]
    details: dict[str, Any]

    @property
    def texts(self) -> dict[str, str]:
        return {"out": self.html}

    @property
    def summary(self) -> str:
        return f"run report: one self-contained page, {len(self.html) // 1024} KiB"


def run(params: Params, paths: ReportPaths) -> ReportPage:
    """The page of the run in the working directory, from the outputs ``paths`` names."""
    return ReportPage(report_html(".", paths), {}, {})
