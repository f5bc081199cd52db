"""DVC stage `package@<target>`: turn the target's selected subnets into verified packages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import torch

from onceflow import stage
from onceflow.config import load_params
from onceflow.data.prepared import load_prepared
from onceflow.io import atomic_dir, read_json
from onceflow.metrics import package_headline, parse_stage_args, write_metrics
from onceflow.package.lineage import collect_lineage
from onceflow.package.pipeline import package_metrics, package_target
from onceflow.supernet import load_supernet


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.package", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--target", required=True, help="a name under latency.targets")
    for name in ("supernet", "data", "selection", "latency", "out", "metrics"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--predictor", default="models/predictor", help="recorded in the lineage only")
    args = parse_stage_args(ap, argv)

    params = load_params(args.params)
    torch.set_num_threads(params.base.threads)
    torch.manual_seed(params.base.seed)
    inputs = {
        "data": args.data,
        "supernet": args.supernet,
        "latency": args.latency,
        "predictor": args.predictor,
        "selection": str(args.selection).rsplit("/", 1)[0],
    }
    lineage, hashes = collect_lineage(inputs, params.model_dump(mode="json"))
    with atomic_dir(args.out) as tmp:
        results = package_target(
            load_supernet(args.supernet),
            read_json(args.selection),
            load_prepared(args.data),
            target_name=args.target,
            params=params,
            lineage=lineage,
            content_hashes=hashes,
            out_root=tmp,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            selection_source=args.selection,
        )
    details = package_metrics(args.target, results)
    write_metrics(args.metrics, package_headline(details), details, args.details)
    stage.log.info("packaged %d model(s) for %s into %s", len(results), args.target, args.out)


if __name__ == "__main__":
    sys.exit(stage.run(main))
