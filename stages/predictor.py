"""DVC stage `predictor`: measure subnets of the supernet (resumable CSV), fit and select the
accuracy predictor, write models/predictor/, metrics and the learning-curve plot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.io import atomic_dir, write_bytes_atomic, write_text_atomic
from onceflow.metrics import parse_stage_args, write_metrics
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
    args = parse_stage_args(ap, argv)

    params = load_params(args.params)
    result = run_predictor(params, args.supernet, args.data, args.dataset)
    with atomic_dir(args.out) as tmp:
        result.save(tmp)
    write_metrics(args.metrics, result.headline, result.details, args.details)
    write_bytes_atomic(args.plot, result.plot_png)
    write_text_atomic(args.plot_data, result.plot_csv)
    stage.log.info("%s", result.summary)


if __name__ == "__main__":
    sys.exit(stage.run(main))
