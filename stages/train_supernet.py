"""DVC stage `train_supernet`: train the elastic supernet, write models/supernet/ and metrics.

Single process: ``python -m stages.train_supernet ...``; data-parallel: ``torchrun
--nproc_per_node=K -m stages.train_supernet ...`` (gloo on CPU, NCCL on GPU). Reruns resume
from ``--checkpoints`` (default: this machine's onceflow cache, outside any workspace, so a
flow run that died resumes in the next one). Only rank 0 writes outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onceflow import hostcache, stage
from onceflow.config import load_params
from onceflow.io import atomic_dir
from onceflow.metrics import supernet_headline, write_metrics
from onceflow.supernet import save_supernet
from onceflow.train.pipeline import supernet_training


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.train_supernet", description=__doc__)
    for name in ("params", "data", "out", "metrics", "live"):
        ap.add_argument(f"--{name}", required=name != "params", default="params.yaml")
    ap.add_argument("--checkpoints", help="default: <onceflow cache>/checkpoints/supernet")
    args = stage.parse_args(ap, argv)

    params = load_params(args.params)
    with supernet_training(
        params,
        data=args.data,
        live=args.live,
        checkpoints=args.checkpoints or hostcache.checkpoints_dir(),
        outputs=(args.out, args.metrics, args.details, args.live),
        relaunch=("stages.train_supernet", sys.argv[1:] if argv is None else argv),
    ) as trained:
        if trained is not None:
            with atomic_dir(args.out) as tmp:
                save_supernet(trained.model, tmp)
            metrics = trained.metrics
            write_metrics(args.metrics, supernet_headline(metrics), metrics, args.details)
            stage.log.info("supernet trained: %s", metrics)


if __name__ == "__main__":
    sys.exit(stage.run(main))
