"""DVC stage `search@<target>`: predictor-guided search on one latency target -- the Pareto
front, one subnet per latency budget, the random baseline, and the picks measured for real."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from onceflow import stage
from onceflow.config import load_params
from onceflow.data.prepared import load_prepared
from onceflow.io import (
    atomic_dir,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from onceflow.latency import load_estimator
from onceflow.metrics import parse_stage_args, write_metrics
from onceflow.predictor import load_predictor
from onceflow.predictor.dataset import SubnetMeter
from onceflow.predictor.pipeline import measure_settings
from onceflow.search import budgets_for, report, run_search
from onceflow.supernet import SearchSpace
from onceflow.supernet.supernet import SPACE_FILE, load_supernet


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.search", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    for name in ("target", "supernet", "data", "predictor", "latency", "out", "metrics", "plot"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="CSV of the plotted points (DVC plot)")
    args = parse_stage_args(ap, argv)

    params = load_params(args.params)
    cfg, t, seed = params.search, args.target, params.base.seed
    budgets = budgets_for(cfg, params.latency.targets, t)
    torch.set_num_threads(params.base.threads)
    space = SearchSpace.from_json(read_json(f"{args.supernet}/{SPACE_FILE}"))
    pred, est = load_predictor(args.predictor, space), load_estimator(args.latency, space)
    enc = pred.encoder
    result = run_search(
        space.dimensions(), cfg, budgets, pred.predict, est.predict, seed=seed,
        canonicalize=enc.canonicalize, extra={"macs": enc.macs, "params": enc.params},
        describe=lambda x: str(space.decode(x)),
    )  # fmt: skip
    real = None
    if cfg.evaluate_selected:  # close the loop: BN recalibrated, val subset as in the dataset
        settings = measure_settings(params.predictor, seed)
        meter = SubnetMeter(load_supernet(args.supernet), load_prepared(args.data), settings)
        real = [meter(space.decode(p.x)) for p in result.picks]
    describe = report.arch_describer(space.decode)
    with atomic_dir(args.out) as tmp:
        write_json_atomic(tmp / "pareto.json", report.pareto_doc(result, t, describe))
        write_json_atomic(tmp / "selected.json", report.selected_doc(result, t, budgets, describe))
    headline = report.search_metrics(result, t, real)
    write_metrics(args.metrics, headline, report.search_details(result, t, real), args.details)
    write_bytes_atomic(args.plot, report.pareto_png(result, f"search@{t}", real))
    write_text_atomic(args.plot_data, report.plot_rows(result))
    stage.log.info("search@%s: front %d, hv %.4f", t, len(result.front.x), result.hypervolume)


if __name__ == "__main__":
    sys.exit(stage.run(main))
