"""DVC stage `prepare`: read the dataset, split it, validate it, write data/prepared/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.config import load_params
from onceflow.data.prepare import prepare_dataset
from onceflow.io import atomic_dir, write_json_atomic, write_text_atomic
from onceflow.metrics import write_metrics


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.prepare", description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", required=True, help="prepared-data directory")
    ap.add_argument("--report", required=True, help="validation report (JSON)")
    ap.add_argument("--summary", required=True, help="validation summary (Markdown)")
    ap.add_argument("--metrics", required=True)
    args = stage.parse_args(ap, argv)

    params = load_params(args.params)
    result = prepare_dataset(params.data, params.base.seed)
    # The report is written whether or not the gate passes: it is how a user sees why.
    write_json_atomic(args.report, result.gate.to_json())
    write_text_atomic(args.summary, result.gate.summary_markdown())
    result.require_passed(args.report, args.out)
    with atomic_dir(args.out) as tmp:
        result.save(tmp)
    write_metrics(args.metrics, result.headline, result.details, args.details)
    stage.log.info("prepared %s", result.details)


if __name__ == "__main__":
    sys.exit(stage.run(main))
