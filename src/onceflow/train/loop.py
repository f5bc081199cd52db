"""Supernet training: sandwich rule + in-place distillation over progressive-shrinking phases.

Each optimizer step is one sandwich step (:mod:`onceflow.train.sandwich`). Phases (params
``train.phases``) run in order on shared weights; each names the elastic dimension kinds (the
rest stay at their maximum), its epochs, peak lr and warmup, and whether channels are re-ordered
by importance before it starts. Each phase gets a fresh optimizer and a warmup + cosine
schedule. A run is: start (or resume), epochs of steps (checkpointing as it goes, each epoch
ending with its record), finish.

Determinism and resume: the data order of (phase, epoch), the subnets of global step g and the
augmentation of (g, rank) come from RNGs seeded by (seed, ...), so a run resumed from a
checkpoint continues exactly where the checkpoint was taken (:mod:`onceflow.train.resume`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from onceflow.accuracy import recalibrated_accuracy
from onceflow.config import PhaseConfig, TrainConfig
from onceflow.data.prepared import PreparedData
from onceflow.errors import DataError
from onceflow.inputs import to_input
from onceflow.io import sha256_bytes
from onceflow.progress import Progress
from onceflow.supernet import Arch, SearchSpace, Supernet
from onceflow.train import checkpoint as ckpt
from onceflow.train.attentive import attentive_step_archs, flops_proxy, loss_proxy
from onceflow.train.data import augment
from onceflow.train.distributed import (
    SINGLE_PROCESS,
    DistContext,
    barrier,
    broadcast_state,
    check_in_sync,
    mean_over_ranks,
)
from onceflow.train.resume import RunState, fingerprint, identity_dir, resume, world_key
from onceflow.train.sandwich import sandwich_step, step_archs
from onceflow.train.schedule import Plan, make_plan

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, float | int | str]], None]
# Called with the global step after each step (and its checkpoint); True stops the run there,
# unfinished, as a kill would (what tests of resuming use).
StopCondition = Callable[[int], bool]


@dataclass
class TrainOutcome:
    """What a training run produced."""

    model: Supernet
    history: list[dict] = field(default_factory=list)  # one record per epoch
    train_seconds: float = 0.0  # wall time over all (resumed) sessions
    epochs: float = 0.0  # epochs trained, summed over phases
    completed: bool = True  # False when stopped early by ``should_stop``
    steps_run: int = 0  # optimizer steps taken by this call (0: a finished run was resumed)


def batch_indices(
    n_train: int, plan: Plan, seed: int, phase: int, s: int, ctx: DistContext
) -> np.ndarray:
    """Train indices of this rank's share of step ``s`` of ``phase`` (drop-last epochs)."""
    epoch, b = divmod(s, plan.steps_per_epoch)
    perm = np.random.default_rng([seed, 0xDA7A, phase, epoch]).permutation(n_train)
    idx = perm[b * plan.batch_size : (b + 1) * plan.batch_size]
    return np.sort(idx[ctx.rank :: ctx.world_size])


@dataclass
class _Run:
    """One call of :func:`train_supernet`: its inputs, the resumable state and the clock."""

    data: PreparedData
    cfg: TrainConfig
    seed: int
    device: torch.device
    ctx: DistContext
    directory: Path | None  # this identity's checkpoints; None: none written or resumed
    fp: str  # the run's identity, carried by its checkpoints
    only_arch: Arch | None
    state: RunState
    first_step: int  # global step this call started from
    images: torch.Tensor  # the train split in memory (uint8 NHWC)
    labels: torch.Tensor
    bar: Progress
    on_epoch: EpochCallback | None
    should_stop: StopCondition | None
    t0: float  # perf_counter of the run's start, earlier sessions included

    @property
    def net(self) -> Supernet:
        return self.state.net

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def train_supernet(
    data: PreparedData,
    space: SearchSpace,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    checkpoint_dir: str | Path | None = None,
    ctx: DistContext = SINGLE_PROCESS,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCondition | None = None,
    progress: bool = True,
    only_arch: Arch | None = None,
) -> TrainOutcome:
    """Train a supernet over ``space`` on ``data.train``; resume from ``checkpoint_dir`` if it
    holds a checkpoint of the same run. ``on_epoch`` gets each epoch's metrics (rank 0 only,
    replayed from the checkpoint on resume). ``should_stop`` (see :data:`StopCondition`) may
    end the run early. ``only_arch`` trains that one subnet alone with the same recipe (every
    step is ``[only_arch]`` with the label loss: no sandwich, no distillation), the
    from-scratch baseline the weight-sharing benchmark compares against."""
    device = torch.device(device)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    state, fp, directory = _setup(data, space, cfg, seed, device, directory, ctx, only_arch)
    if on_epoch is not None and ctx.is_main:
        for rec in state.history:
            on_epoch(rec)
    bar = Progress(
        state.plan.total_steps,
        "train_supernet",
        initial=state.global_step,
        enabled=progress and ctx.is_main,
        interval_s=30.0,
        unit="steps",
    )
    images = torch.from_numpy(np.array(data.train.images))  # in memory (uint8), writable
    labels = torch.from_numpy(np.array(data.train.labels))
    run = _Run(
        data, cfg, seed, device, ctx, directory, fp, only_arch, state, state.global_step,
        images, labels, bar, on_epoch, should_stop, time.perf_counter() - state.seconds,
    )  # fmt: skip
    while (phase := _enter_phase(run)) is not None:
        if _train_epoch(run, phase):
            return _finish(run, completed=False)
    return _finish(run, completed=True)


def _setup(
    data: PreparedData,
    space: SearchSpace,
    cfg: TrainConfig,
    seed: int,
    device: torch.device,
    directory: Path | None,
    ctx: DistContext,
    only_arch: Arch | None,
) -> tuple[RunState, str, Path | None]:
    """(state, identity, checkpoint folder) of the run: a fresh seeded supernet (the same on
    every rank) under the step plan, then the state of the newest checkpoint of this identity
    (in its own folder under ``directory``), if any."""
    n_train = len(data.train)
    if n_train == 0:
        raise DataError("prepared train split is empty; check params data.max_train")
    plan = make_plan(n_train, cfg)
    if plan.batch_size < ctx.world_size:
        raise DataError(f"batch of {plan.batch_size} cannot be split over {ctx.world_size} ranks")
    torch.manual_seed(seed)
    net = Supernet(space, zero_init_last_bn=cfg.zero_init_last_bn).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    broadcast_state(net, ctx)
    state = RunState(net, cfg, plan)
    fp = fingerprint(space, cfg, seed, data, world_key(cfg, ctx.world_size), device)
    if only_arch is not None:
        space.validate(only_arch)
        fp = sha256_bytes(f"{fp}:{only_arch}".encode())[:16]
    run_dir = identity_dir(directory, fp, ctx)
    resume(state, run_dir, fp, ctx, device)
    return state, fp, run_dir


def _enter_phase(run: _Run) -> PhaseConfig | None:
    """The phase the next step belongs to (None: the run is done); a phase's first step
    re-orders channels if the phase asks, and starts its optimizer and schedule."""
    st = run.state
    if st.global_step >= st.plan.total_steps:
        return None
    if st.step_in_phase >= st.plan.phase_steps[st.phase]:  # the previous phase is finished
        st.phase += 1
        st.step_in_phase = 0
    phase = run.cfg.phases[st.phase]
    if st.step_in_phase == 0:
        if phase.reorder_channels:
            log.info("phase %s: re-ordering channels by importance", phase.name)
            run.net.reorder_channels()
        st.start_phase()
        n_steps = st.plan.phase_steps[st.phase]
        log.info("phase %s: %d steps, elastic %s", phase.name, n_steps, phase.elastic)
    return phase


def _train_epoch(run: _Run, phase: PhaseConfig) -> bool:
    """Steps up to the end of the current epoch (a resumed run finishes its epoch), then the
    epoch's record; checkpoints along the way. True when ``should_stop`` stopped the run."""
    while True:
        lr, epoch_end = _train_step(run, phase)
        if epoch_end:
            _end_epoch(run, phase, lr)
        _checkpoint(run, epoch_end)
        if run.should_stop is not None and run.should_stop(run.state.global_step):
            return True
        if epoch_end:
            return False


def _train_step(run: _Run, phase: PhaseConfig) -> tuple[float, bool]:
    """One sandwich step; (its learning rate, whether it ended an epoch or the phase)."""
    st, cfg = run.state, run.cfg
    assert st.optimizer is not None and st.scheduler is not None
    x, y = _batch(run, st.phase, st.step_in_phase, st.global_step)
    run.net.train()
    archs = _step_archs(run, phase, x, y)
    l_max, l_rest = sandwich_step(run.net, st.optimizer, x, y, archs, cfg, run.ctx)
    lr = st.optimizer.param_groups[0]["lr"]
    st.scheduler.step()
    st.step_in_phase += 1
    st.global_step += 1
    st.loss_sums[0] += l_max
    st.loss_sums[1] += l_rest if math.isfinite(l_rest) else 0.0
    st.loss_sums[2] += 1
    run.bar.update(1)
    run.bar.set_postfix(loss=f"{l_max:.3f}", phase=phase.name, refresh=False)
    phase_steps = st.plan.phase_steps[st.phase]
    return lr, (st.step_in_phase % st.plan.steps_per_epoch == 0 or st.step_in_phase == phase_steps)


def _step_archs(run: _Run, phase: PhaseConfig, x: torch.Tensor, y: torch.Tensor) -> list[Arch]:
    """The subnets of this step: ``only_arch``, the plain sandwich, or (``attentive_pool``
    >= 2) the sandwich with proxy-picked random subnets (:mod:`onceflow.train.attentive`)."""
    cfg, space, g = run.cfg, run.net.space, run.state.global_step
    if run.only_arch is not None:
        return [run.only_arch]
    if cfg.attentive_pool < 2 or cfg.n_random == 0:
        return step_archs(space, phase, cfg.n_random, run.seed, g)
    proxy = (
        flops_proxy(space) if cfg.attentive_proxy == "flops" else loss_proxy(run.net, x, y, run.ctx)
    )
    return attentive_step_archs(space, phase, cfg, run.seed, g, proxy)


def _batch(run: _Run, phase: int, s: int, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's augmented, normalized batch of step ``s`` of ``phase`` (global step ``g``)."""
    idx = torch.from_numpy(
        batch_indices(len(run.data.train), run.state.plan, run.seed, phase, s, run.ctx)
    )
    gen = torch.Generator().manual_seed(
        int(np.random.SeedSequence([run.seed, g, run.ctx.rank]).generate_state(1)[0])
    )
    x_u8 = augment(run.images[idx], gen, run.cfg.hflip, run.cfg.crop_padding)
    x = to_input(x_u8, run.data.meta, int(x_u8.shape[1]), run.device)
    return x, run.labels[idx].to(run.device)


def _end_epoch(run: _Run, phase: PhaseConfig, lr: float) -> None:
    """The epoch's record (mean losses, validation accuracy) into the history and the logger."""
    st = run.state
    st.seconds = run.elapsed()
    rec = _epoch_record(st, phase, lr, run.data, run.cfg, run.seed, run.ctx, run.device)
    st.history.append(rec)
    if run.on_epoch is not None and run.ctx.is_main:
        run.on_epoch(rec)
    log.info("epoch %d (%s): %s", rec["epoch"], phase.name, _fmt_record(rec))


def _checkpoint(run: _Run, epoch_end: bool) -> None:
    """A checkpoint at each epoch's end and every ``checkpoint_every_steps`` steps, written by
    the main rank into its directory (the other ranks have none, or ignore theirs); it records
    the number of ranks, which an elastic job may change when it resumes."""
    st = run.state
    if not (epoch_end or st.global_step % run.cfg.checkpoint_every_steps == 0):
        return
    st.seconds = run.elapsed()
    if run.ctx.is_main and run.directory is not None:
        state = st.state(run.fp) | {"world": run.ctx.world_size}
        ckpt.save_checkpoint(run.directory, state, st.global_step, run.cfg.keep_checkpoints)
    barrier(run.ctx)


def _finish(run: _Run, completed: bool) -> TrainOutcome:
    """The outcome; a completed run's ranks are checked in sync and its net set to the max
    subnet (or ``only_arch``)."""
    run.bar.close()
    if completed:
        check_in_sync(run.net, run.ctx)
        run.net.set_active(run.only_arch if run.only_arch is not None else run.net.space.max_arch())
    st = run.state
    return TrainOutcome(
        run.net, st.history, run.elapsed(), _epochs(st), completed, st.global_step - run.first_step
    )


def _epochs(sess: RunState) -> float:
    return round(sess.global_step / sess.plan.steps_per_epoch, 4)


def _epoch_record(
    sess: RunState,
    phase: PhaseConfig,
    lr: float,
    data: PreparedData,
    cfg: TrainConfig,
    seed: int,
    ctx: DistContext,
    device: torch.device,
) -> dict:
    sums = sess.loss_sums
    n = max(int(sums[2]), 1)
    rec: dict = {
        "epoch": len(sess.history) + 1,
        "phase": phase.name,
        "step": sess.global_step,
        "lr": lr,
        "train_loss_max": mean_over_ranks(sums[0] / n, ctx, device),
        "train_loss_distill": mean_over_ranks(sums[1] / n, ctx, device),
        "seconds": round(sess.seconds, 2),
    }
    sess.loss_sums = [0.0, 0.0, 0]
    if cfg.epoch_eval_images > 0 and ctx.is_main:
        space = sess.net.space
        for name, arch in (("max", space.max_arch()), ("min", space.min_arch())):
            rec[f"val_acc_{name}"] = recalibrated_accuracy(
                sess.net,
                arch,
                data,
                n_calib=cfg.bn_calib_images,
                max_images=cfg.epoch_eval_images,
                batch_size=cfg.eval_batch_size,
                seed=seed,
            )
    return rec


def _fmt_record(rec: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in rec.items()
        if k not in ("epoch", "phase")
    )


def final_metrics(
    outcome: TrainOutcome, data: PreparedData, cfg: TrainConfig, seed: int = 0
) -> dict[str, float]:
    """metrics/supernet.json: val accuracy of the max, min and mid subnets after BN
    recalibration (full val split), plus training time, epochs and the space's size."""
    t0 = time.perf_counter()
    net = outcome.model
    space = net.space
    out: dict[str, float] = {}
    for name, arch in (
        ("max", space.max_arch()),
        ("min", space.min_arch()),
        ("mid", space.mid_arch()),
    ):
        out[f"val_acc_{name}"] = recalibrated_accuracy(
            net, arch, data, n_calib=cfg.bn_calib_images, batch_size=cfg.eval_batch_size, seed=seed
        )
    out |= {
        "train_seconds": round(outcome.train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "epochs": outcome.epochs,
        "space_size": space.size(),
        "params": sum(p.numel() for p in net.parameters()),
    }
    return out
