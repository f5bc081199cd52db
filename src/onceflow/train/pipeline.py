"""The train_supernet stage's sequence: ranks, training, final metrics (what the stage calls).

Single process, or ``params.train.processes`` local ranks (the stage module is relaunched as
each rank), or ranks started by ``torchrun``. Rank 0 logs each epoch to DVCLive and gets the
result to write; a failure removes the outputs the run had started (the live dir grows).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from onceflow.config import Params
from onceflow.data.prepared import load_prepared
from onceflow.supernet import SearchSpace, Supernet
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


@dataclass(frozen=True)
class TrainedSupernet:
    """What the stage writes: the supernet and ``metrics/supernet.details.json``."""

    model: Supernet
    metrics: dict[str, float]  # :func:`~onceflow.train.loop.final_metrics`


@contextmanager
def supernet_training(
    params: Params,
    *,
    data: str | Path,
    live: str | Path,
    checkpoints: str | Path,
    outputs: Sequence[str | Path],
    relaunch: tuple[str, Sequence[str]],
) -> Iterator[TrainedSupernet | None]:
    """Train the supernet and yield it with its metrics on rank 0 (None on the other ranks and
    in a launcher of local ranks). The block writes ``outputs``; if it or the training raises,
    the outputs it created are removed. Then all ranks meet and the process group closes.

    ``relaunch`` is (module, argv) of the stage, run as each local rank when params
    ``train.processes`` > 1 and no launcher set ``WORLD_SIZE``."""
    if params.train.processes > 1 and "WORLD_SIZE" not in os.environ:
        module, argv = relaunch
        launch_local(
            params.train.processes, module, list(argv), outputs=outputs, scratch=(checkpoints,)
        )
        yield None
        return
    ctx = init_distributed(params.base.device, params.train.ddp_backend)
    torch.set_num_threads(max(1, params.base.threads // ctx.world_size))
    try:
        with removing_partial(outputs if ctx.is_main else ()):
            yield _train(params, data, live, checkpoints, ctx)
        barrier(ctx)
    finally:
        shutdown(ctx)


def _train(
    params: Params,
    data_dir: str | Path,
    live_dir: str | Path,
    checkpoints: str | Path,
    ctx: DistContext,
) -> TrainedSupernet | None:
    data = load_prepared(data_dir, mmap=False)
    m = data.meta
    space = SearchSpace(params.supernet, m.channels, m.n_classes, min(m.height, m.width))
    live = LiveLogger(live_dir) if ctx.is_main else None
    outcome = train_supernet(
        data,
        space,
        params.train,
        seed=params.base.seed,
        device=resolve_device(params.base.device, ctx),
        checkpoint_dir=checkpoints,
        ctx=ctx,
        on_epoch=live.log_epoch if live else None,
    )
    if live is None:
        return None
    torch.set_num_threads(params.base.threads)  # the other ranks idle now
    metrics = final_metrics(outcome, data, params.train, params.base.seed)
    live.finish(metrics)
    return TrainedSupernet(outcome.model, metrics)
