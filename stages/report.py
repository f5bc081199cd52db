"""DVC stage `report`: one self-contained HTML page of the whole run (reports/run.html)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.report import ReportPaths, write_report


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.report", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    for name in ("validation", "metrics", "plots", "live", "artifacts", "out"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)
    paths = ReportPaths(
        params=args.params,
        validation=args.validation,
        metrics=args.metrics,
        plots=args.plots,
        live=args.live,
        artifacts=args.artifacts,
    )
    out = write_report(".", args.out, paths)
    stage.log.info("run report: %s", out.resolve())


if __name__ == "__main__":
    sys.exit(stage.run(main))
