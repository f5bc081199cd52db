"""DVC stage `package@<target>`: turn the target's selected subnets into verified packages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.metrics import package_headline, write_metrics
from onceflow.package.pipeline import package_stage


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.package", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--target", required=True, help="a name under latency.targets")
    for name in ("supernet", "data", "selection", "latency", "out", "metrics"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--predictor", default="models/predictor", help="recorded in the lineage only")
    args = stage.parse_args(ap, argv)

    params = load_params(args.params)
    run = package_stage(
        params,
        args.target,
        supernet=args.supernet,
        data=args.data,
        selection=args.selection,
        latency=args.latency,
        predictor=args.predictor,
        out=args.out,
    )
    write_metrics(args.metrics, package_headline(run.details), run.details, args.details)
    stage.log.info("packaged %d model(s) for %s into %s", len(run.results), args.target, args.out)


if __name__ == "__main__":
    sys.exit(stage.run(main))
