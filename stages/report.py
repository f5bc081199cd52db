"""DVC stage `report`: one self-contained HTML page of the whole run (reports/run.html)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.io import write_text_atomic
from onceflow.report import ReportPaths, report_html

INPUTS = ("validation", "metrics", "plots", "live", "artifacts")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.report", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    for name in (*INPUTS, "out"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)
    paths = ReportPaths(params=args.params, **{name: getattr(args, name) for name in INPUTS})
    out = write_text_atomic(args.out, report_html(".", paths))
    stage.log.info("run report: %s", out.resolve())


if __name__ == "__main__":
    sys.exit(stage.run(main))
