"""DVC stage `search@<target>`: predictor-guided search on one latency target -- the Pareto
front, one subnet per latency budget, the random baseline, and the picks measured for real."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.search_stage import Paths, run

OUTPUTS = ("out", "metrics", "plot", "plot_data")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.search", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
