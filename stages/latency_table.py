"""Stage latency_table@<target>: measure a LUT, calibrate and validate it against real subnets."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.latency.stage import Paths, run

OUTPUTS = ("out", "metrics", "plot", "plot_data")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.latency_table", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
