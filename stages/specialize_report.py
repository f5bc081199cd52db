"""Stage specialize_report: every target's picks on every other target (does one fit all?)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from onceflow import stage
from onceflow.config import load_params
from onceflow.data.prepared import load_prepared
from onceflow.io import write_bytes_atomic, write_text_atomic
from onceflow.metrics import parse_stage_args, write_metrics
from onceflow.specialization.plot import plot_rows, specialization_png
from onceflow.specialization.report import specialization_report
from onceflow.supernet import load_supernet


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.specialize_report", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    names = ("supernet", "data", "latency", "search", "artifacts", "metrics", "plot")
    for name in names:
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="the plot's points (CSV) for dvc plots")
    args = parse_stage_args(ap, argv)
    params = load_params(args.params)
    torch.set_num_threads(params.base.threads)
    headline, details = specialization_report(
        params,
        load_supernet(args.supernet).eval(),
        load_prepared(args.data),
        latency_root=Path(args.latency),
        search_root=Path(args.search),
        artifacts_root=Path(args.artifacts),
    )
    write_metrics(args.metrics, headline, details, args.details)
    write_bytes_atomic(args.plot, specialization_png(details, details["verdict"]))
    write_text_atomic(args.plot_data, plot_rows(details))
    stage.log.info("specialization: %s", details["verdict"])


if __name__ == "__main__":
    sys.exit(stage.run(main))
