"""Stage specialize_report: every target's picks on every other target (does one fit all?)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.specialization.report import run_specialization


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.specialize_report", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    names = ("supernet", "data", "latency", "search", "artifacts", "metrics", "plot")
    for name in names:
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="the plot's points (CSV) for dvc plots")
    args = stage.parse_args(ap, argv)
    result = run_specialization(
        load_params(args.params), supernet_dir=args.supernet, data_dir=args.data,
        latency_root=args.latency, search_root=args.search, artifacts_root=args.artifacts,
    )  # fmt: skip
    stage.write_outputs(result, args)


if __name__ == "__main__":
    sys.exit(stage.run(main))
