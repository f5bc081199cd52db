"""DVC stage `publish`: upload every package under artifacts/ to the registry (publish.uri)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.metrics import write_metrics
from onceflow.registry.publish import run_publish


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.publish", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--artifacts", required=True, help="artifacts/<target>/<model-id>/ packages")
    ap.add_argument("--metrics", required=True)
    args = stage.parse_args(ap, argv)

    run = run_publish(load_params(args.params).publish, args.artifacts)
    write_metrics(args.metrics, run.headline, run.details, args.details)
    stage.log.info("publish to %s: %d package(s)", run.registry, len(run.results))


if __name__ == "__main__":
    sys.exit(stage.run(main))
