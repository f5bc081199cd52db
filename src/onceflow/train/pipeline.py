"""The train_supernet stage's sequence: ranks, training, final metrics (what the stage,
:mod:`onceflow.train.stage`, calls).

Single process; or this machine's ranks of a launched job (``params.train.processes`` local
ranks on ``train.nodes`` machines, the stage module relaunched as each rank: this machine is the
job's first node); or ranks started by ``torchrun``. Rank 0 (on the first node) logs each epoch
to DVCLive and returns the result to write; a failure removes the outputs the run had started (the
live dir grows). The ranks of other machines (``onceflow train join``) train and write nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from onceflow.config import Params
from onceflow.data.prepared import load_prepared
from onceflow.errors import OnceflowError
from onceflow.io import removing_partial
from onceflow.supernet import SearchSpace, Supernet
from onceflow.train.distributed import (
    DistContext,
    barrier,
    init_distributed,
    resolve_device,
    shutdown,
)
from onceflow.train.launch import launch
from onceflow.train.live import LiveLogger
from onceflow.train.loop import final_metrics, train_supernet
from onceflow.train.nodes import first_node


@dataclass(frozen=True)
class TrainedSupernet:
    """What the stage writes: the supernet and ``metrics/supernet.details.json``."""

    model: Supernet
    metrics: dict[str, float]  # :func:`~onceflow.train.loop.final_metrics`


def supernet_training(
    params: Params,
    *,
    data: str | Path,
    live: str | Path,
    checkpoints: str | Path,
    outputs: Sequence[str | Path],
    relaunch: tuple[str, Sequence[str]],
) -> TrainedSupernet | None:
    """Train the supernet and return it with its metrics on rank 0, after all ranks met and the
    process group closed (None on the other ranks and in a launcher of ranks: the ranks write).
    If training raises, the ``outputs`` it created (the live dir grows) are removed.

    ``relaunch`` is (module, argv) of the stage, run as each local rank when params
    ``train.processes`` or ``train.nodes`` > 1 and no launcher set ``WORLD_SIZE``."""
    t = params.train
    if (t.processes > 1 or t.node_range[1] > 1) and "WORLD_SIZE" not in os.environ:
        module, argv = relaunch
        with first_node(params, data) as rdzv:
            launch(
                t.processes, module, list(argv), rdzv=rdzv, outputs=outputs, scratch=(checkpoints,)
            )
        return None
    ctx = _join(params)
    try:
        with removing_partial(outputs if ctx.is_main else ()):
            trained = _train(params, data, live, checkpoints, ctx)
        barrier(ctx)
    finally:
        shutdown(ctx)
    return trained


def train_joined_node(params: Params, data: str | Path) -> None:
    """A rank of a machine that joined the job (``onceflow train join``): it trains its share
    and writes nothing (rank 0, on the first node, writes)."""
    ctx = _join(params)
    try:
        if ctx.is_main:
            raise OnceflowError(
                "a joined node became rank 0: the job has no first node (start the DVC stage "
                "train_supernet first; join only its endpoint)"
            )
        _train(params, data, None, None, ctx)
        barrier(ctx)
    finally:
        shutdown(ctx)


def _join(params: Params) -> DistContext:
    ctx = init_distributed(params.base.device, params.train.ddp_backend)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))  # ranks on this machine
    torch.set_num_threads(max(1, params.base.threads // max(1, local)))
    return ctx


def _train(
    params: Params,
    data_dir: str | Path,
    live_dir: str | Path | None,
    checkpoints: str | Path | None,
    ctx: DistContext,
) -> TrainedSupernet | None:
    data = load_prepared(data_dir, mmap=False)
    m = data.meta
    space = SearchSpace(params.supernet, m.channels, m.n_classes, min(m.height, m.width))
    live = LiveLogger(live_dir) if ctx.is_main and live_dir is not None else None
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
