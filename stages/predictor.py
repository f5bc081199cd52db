"""DVC stage `predictor`: measure subnets of the supernet (resumable CSV), fit and select the
accuracy predictor, write models/predictor/, metrics and the learning-curve plot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.predictor.pipeline import run_predictor


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.predictor", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--dataset", required=True, help="arch,accuracy CSV (appended, resumable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plot", required=True, help="learning-curve PNG")
    ap.add_argument("--plot-data", required=True, help="the held-out points (CSV) for dvc plots")
    args = stage.parse_args(ap, argv)

    params = load_params(args.params)
    result = run_predictor(params, args.supernet, args.data, args.dataset)
    stage.write_outputs(result, args)


if __name__ == "__main__":
    sys.exit(stage.run(main))
