"""DVC stage `predictor`: measure subnets of the supernet (resumable CSV), fit and select the
accuracy predictor, write models/predictor/, metrics and the learning-curve plot."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.predictor.stage import Paths, run

OUTPUTS = ("out", "metrics", "plot", "plot_data")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.predictor", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
