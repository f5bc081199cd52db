"""Stage latency_table@<target>: measure a LUT, calibrate and validate it against real subnets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.latency.stage import run_latency_table


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    for name in ("target", "supernet", "data", "out", "metrics", "plot"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--plot-data", required=True, help="the plot's points (CSV) for dvc plots")
    ap.add_argument("--results", default=None, help="device_results@<T>: imported timings")
    ap.add_argument("--transfer", default=None, help="device_results@<T>: a transferred LUT")
    args = stage.parse_args(ap, argv)
    params = load_params(args.params)
    result = run_latency_table(
        params,
        args.target,
        args.supernet,
        args.data,
        params_file=args.params,
        results=args.results,
        transfer=args.transfer,
    )
    stage.write_outputs(result, args)


if __name__ == "__main__":
    sys.exit(stage.run(main))
