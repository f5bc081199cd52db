"""Stage latency_table@<target>: measure a LUT, calibrate and validate it against real subnets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from onceflow import stage
from onceflow.config import load_params
from onceflow.data.prepared import load_prepared
from onceflow.errors import ConfigError
from onceflow.io import atomic_dir, write_bytes_atomic, write_json_atomic, write_text_atomic
from onceflow.latency import build_latency_table, make_backend
from onceflow.latency.calibration_data import calibration_images
from onceflow.latency.estimator import ESTIMATOR_FILE, estimator_json
from onceflow.latency.lut import LUT_FILE
from onceflow.latency.plot import plot_rows
from onceflow.metrics import latency_headline, parse_stage_args, write_metrics
from onceflow.plots import latency_png
from onceflow.supernet import build_layer, load_supernet


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("params", "target", "supernet", "data", "out", "metrics", "plot"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="the plot's points (CSV) for dvc plots")
    args = parse_stage_args(ap, argv)
    params = load_params(args.params)
    cfg = params.latency
    if args.target not in cfg.targets:
        raise ConfigError(
            f"{args.params}: latency.targets has no {args.target!r} ({list(cfg.targets)})"
        )
    target = cfg.targets[args.target]
    torch.set_num_threads(params.base.threads)
    supernet = load_supernet(args.supernet).eval()
    images = None
    if target.precision == "int8":  # int8 calibration (TensorRT, ONNX Runtime) on train images
        n = target.options.int8_calibration_images
        images = calibration_images(load_prepared(args.data), n, params.base.seed)
    backend = make_backend(target, images)
    result = build_latency_table(
        supernet.space, build_layer, supernet.extract, backend, cfg, args.target, params.base.seed
    )
    with atomic_dir(args.out) as tmp:
        write_json_atomic(tmp / LUT_FILE, result.lut.to_json())
        write_json_atomic(tmp / ESTIMATOR_FILE, estimator_json(result.calibration, args.target))
        write_json_atomic(tmp / "validation.json", result.records)
    write_metrics(args.metrics, latency_headline(result.metrics), result.metrics, args.details)
    title = (
        f"{args.target}: within ±10% {result.metrics['within_10pct']:.0%}, "
        f"Kendall τ {result.metrics['kendall_tau']:.3f}"
    )
    write_bytes_atomic(args.plot, latency_png(result.records, title))
    write_text_atomic(args.plot_data, plot_rows(result.records))


if __name__ == "__main__":
    sys.exit(stage.run(main))
