"""DVC stage `report`: one self-contained HTML page of the whole run (reports/run.html)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.report.stage import Paths, run

OUTPUTS = ("out",)


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.report", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
