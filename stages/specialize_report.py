"""Stage specialize_report: every target's picks on every other target (does one fit all?)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.specialization.stage import Paths, run

OUTPUTS = ("metrics", "plot", "plot_data")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.specialize_report", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
