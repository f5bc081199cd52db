"""DVC stage `train_supernet`: train the elastic supernet, write models/supernet/ and metrics.

Single process: ``python -m stages.train_supernet ...``; data-parallel: ``torchrun
--nproc_per_node=K -m stages.train_supernet ...`` (gloo on CPU, NCCL on GPU). Reruns resume
from ``--checkpoints``. Only rank 0 writes outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import torch

from onceflow import stage
from onceflow.config import Params, load_params
from onceflow.data.prepared import load_prepared
from onceflow.io import atomic_dir
from onceflow.metrics import parse_stage_args, supernet_headline, write_metrics
from onceflow.supernet import SearchSpace, save_supernet
from onceflow.train.distributed import (
    DistContext,
    barrier,
    init_distributed,
    launch_local,
    removing_partial,
    resolve_device,
    shutdown,
)
from onceflow.train.live import LiveLogger
from onceflow.train.loop import final_metrics, train_supernet


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="stages.train_supernet", description=__doc__)
    for name in ("params", "data", "out", "metrics", "live", "checkpoints"):
        ap.add_argument(f"--{name}", required=name != "params", default="params.yaml")
    args = parse_stage_args(ap, argv)

    params = load_params(args.params)
    if params.train.processes > 1 and "WORLD_SIZE" not in os.environ:
        argv = list(argv) if argv is not None else sys.argv[1:]
        return launch_local(
            params.train.processes, "stages.train_supernet", argv,
            outputs=(args.out, args.metrics, args.details, args.live), scratch=(args.checkpoints,),
        )  # fmt: skip
    ctx = init_distributed(params.base.device, params.train.ddp_backend)
    torch.set_num_threads(max(1, params.base.threads // ctx.world_size))
    try:
        # A failed run leaves no partial outputs (rank 0 writes them; the live dir grows).
        with removing_partial(
            (args.out, args.metrics, args.details, args.live) if ctx.is_main else ()
        ):
            _train(args, params, ctx)
        barrier(ctx)
    finally:
        shutdown(ctx)


def _train(args: argparse.Namespace, params: Params, ctx: DistContext) -> None:
    data = load_prepared(args.data, mmap=False)
    m = data.meta
    space = SearchSpace(params.supernet, m.channels, m.n_classes, min(m.height, m.width))
    live = LiveLogger(args.live) if ctx.is_main else None
    outcome = train_supernet(
        data,
        space,
        params.train,
        seed=params.base.seed,
        device=resolve_device(params.base.device, ctx),
        checkpoint_dir=args.checkpoints,
        ctx=ctx,
        on_epoch=live.log_epoch if live else None,
    )
    if live is not None:
        torch.set_num_threads(params.base.threads)  # the other ranks idle now
        metrics = final_metrics(outcome, data, params.train, params.base.seed)
        live.finish(metrics)
        with atomic_dir(args.out) as tmp:
            save_supernet(outcome.model, tmp)
        write_metrics(args.metrics, supernet_headline(metrics), metrics, args.details)
        stage.log.info("supernet trained: %s", metrics)


if __name__ == "__main__":
    sys.exit(stage.run(main))
