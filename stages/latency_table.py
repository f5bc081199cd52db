"""Stage latency_table@<target>: measure a LUT, calibrate and validate it against real subnets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.io import atomic_dir, write_bytes_atomic, write_text_atomic
from onceflow.latency.stage import run_latency_table
from onceflow.metrics import parse_stage_args, write_metrics


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("params", "target", "supernet", "data", "out", "metrics", "plot"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="the plot's points (CSV) for dvc plots")
    ap.add_argument("--results", default=None, help="device_results@<T>: imported timings")
    args = parse_stage_args(ap, argv)
    params = load_params(args.params)
    result = run_latency_table(
        params, args.target, args.supernet, args.data, params_file=args.params, results=args.results
    )
    with atomic_dir(args.out) as tmp:
        result.save(tmp)
    write_metrics(args.metrics, result.headline, result.details, args.details)
    write_bytes_atomic(args.plot, result.plot_png)
    write_text_atomic(args.plot_data, result.plot_csv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
