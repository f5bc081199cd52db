"""DVC stage `search@<target>`: predictor-guided search on one latency target -- the Pareto
front, one subnet per latency budget, the random baseline, and the picks measured for real."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.search_stage import run_search_target


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.search", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    for name in ("target", "supernet", "data", "predictor", "latency", "out", "metrics", "plot"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="CSV of the plotted points (DVC plot)")
    args = stage.parse_args(ap, argv)

    params = load_params(args.params)
    result = run_search_target(
        params, args.target, supernet_dir=args.supernet, data_dir=args.data,
        predictor_dir=args.predictor, latency_dir=args.latency,
    )  # fmt: skip
    stage.write_outputs(result, args)


if __name__ == "__main__":
    sys.exit(stage.run(main))
