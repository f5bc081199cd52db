"""Per-epoch training metrics through DVCLive, plus a PNG of the training curves.

DVCLive is told not to edit dvc.yaml (``dvcyaml=None``) and not to save experiments: the
pipeline's dvc.yaml declares the plots. Only rank 0 creates a :class:`LiveLogger`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from dvclive import Live
from scmrepo.exceptions import SCMError

from onceflow import plots

log = logging.getLogger(__name__)


class _Live(Live):
    """DVCLive that survives a git repo without commits (dvclive 3.49 raises SCMError there,
    e.g. in a fresh clone or a test's temp repo): it then logs files only."""

    def _init_dvc(self) -> None:
        try:
            super()._init_dvc()
        except SCMError as err:
            log.warning("DVCLive: no git commit to attach to (%s); writing files only", err)


CURVES_PNG = "training_curves.png"


class LiveLogger:
    """Log each epoch record's numbers as a DVCLive step; draw the curves at the end."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.live = _Live(str(directory), dvcyaml=None, save_dvc_exp=False, report=None)
        self.records: list[dict[str, Any]] = []

    def log_epoch(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool):
                self.live.log_metric(f"train/{k}", float(v))
        self.live.next_step()

    def finish(self, summary: dict[str, float]) -> None:
        for k, v in summary.items():
            self.live.summary[k] = v
        if self.records:
            self.live.log_image(CURVES_PNG, plots.training_curves(self.records))
        self.live.end()
