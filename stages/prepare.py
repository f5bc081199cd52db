"""DVC stage `prepare`: read the dataset, split it, validate it, write data/prepared/."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.data.stage import Paths, run

OUTPUTS = ("out", "report", "summary", "metrics")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.prepare", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
