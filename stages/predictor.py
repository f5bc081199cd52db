"""DVC stage `predictor`: measure subnets of the supernet (resumable CSV), fit and select the
accuracy predictor, write models/predictor/, metrics and the learning-curve plot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from onceflow import stage
from onceflow.config import load_params
from onceflow.data.prepared import load_prepared
from onceflow.io import atomic_dir, write_bytes_atomic, write_text_atomic
from onceflow.metrics import parse_stage_args, write_metrics
from onceflow.predictor import pipeline, save_predictor
from onceflow.supernet.supernet import load_supernet


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
    cfg = params.predictor
    torch.set_num_threads(params.base.threads)
    data = load_prepared(args.data)
    supernet = load_supernet(args.supernet)
    settings = pipeline.measure_settings(cfg, params.base.seed)
    context = pipeline.measurement_context(args.supernet, supernet, args.data, settings)
    run = pipeline.train_predictor(
        supernet, data, cfg, seed=params.base.seed, dataset_csv=args.dataset, context=context
    )
    details = pipeline.predictor_details(run, cfg.target)
    metrics = pipeline.predictor_metrics(details)
    with atomic_dir(args.out) as tmp:
        save_predictor(run.predictor, tmp, {"metrics": metrics})
    write_metrics(args.metrics, metrics, details, args.details)
    ceiling = metrics["ceiling"]
    write_bytes_atomic(args.plot, pipeline.learning_curve_png(run, ceiling))
    write_text_atomic(args.plot_data, pipeline.plot_rows(run))
    stage.log.info(
        "predictor %s: held-out Kendall tau %.3f on %d subnets (label-noise ceiling %s)",
        details["model"],
        details["kendall_tau"],
        details["n_holdout"],
        "n/a" if ceiling is None else f"{ceiling:.3f}",
    )


if __name__ == "__main__":
    sys.exit(stage.run(main))
