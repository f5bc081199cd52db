"""Supernet training: sandwich rule + in-place distillation over progressive-shrinking phases.

One step (every rank, same subnets): the max subnet learns from the labels (label-smoothed CE);
the min subnet and ``n_random`` random subnets learn from the max subnet's soft labels (KL or
alpha-divergence). Each subnet sees the batch at its own resolution. Gradients of all passes
are summed, averaged over ranks, clipped, and one SGD (Nesterov) step is taken.

Phases (params ``train.phases``) run in order on shared weights; each names the elastic
dimension kinds (the rest stay at their maximum), its epochs, peak lr and warmup, and whether
channels are re-ordered by importance before it starts. Each phase gets a fresh optimizer and
a warmup + cosine schedule.

Determinism and resume: the data order of (phase, epoch), the subnets of global step g and the
augmentation of (g, rank) come from RNGs seeded by (seed, ...), so a run resumed from a
checkpoint continues exactly where the checkpoint was taken.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onceflow.config import PhaseConfig, TrainConfig
from onceflow.data.prepared import PreparedData, data_identity
from onceflow.errors import DataError
from onceflow.progress import Progress
from onceflow.supernet import Arch, SearchSpace, Supernet
from onceflow.train import checkpoint as ckpt
from onceflow.train.data import augment, resize, to_input
from onceflow.train.distributed import (
    DistContext,
    allreduce_gradients,
    barrier,
    broadcast_state,
    check_in_sync,
    mean_over_ranks,
)
from onceflow.train.evaluation import subnet_accuracy
from onceflow.train.losses import alpha_distill, kl_distill
from onceflow.train.schedule import make_optimizer, make_scheduler

log = logging.getLogger(__name__)

SINGLE_PROCESS = DistContext()

EpochCallback = Callable[[dict[str, float | int | str]], None]


@dataclass
class TrainOutcome:
    """What a training run produced."""

    model: Supernet
    history: list[dict] = field(default_factory=list)  # one record per epoch
    train_seconds: float = 0.0  # wall time over all (resumed) sessions
    epochs: float = 0.0  # epochs trained, summed over phases
    completed: bool = True  # False when stopped early by ``stop_at_step``
    steps_run: int = 0  # optimizer steps taken by this call (0: a finished run was resumed)


@dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    batch_size: int  # global
    phase_steps: tuple[int, ...]
    warmup_steps: tuple[int, ...]

    @property
    def total_steps(self) -> int:
        return sum(self.phase_steps)


def make_plan(n_train: int, cfg: TrainConfig) -> _Plan:
    batch = min(cfg.batch_size, n_train)
    spe = max(1, n_train // batch)
    steps = tuple(max(1, round(p.epochs * spe)) for p in cfg.phases)
    warm = tuple(round(p.warmup_epochs * spe) for p in cfg.phases)
    return _Plan(spe, batch, steps, warm)


# Modules of the train package that supernet training never runs (packaging's fine-tune):
# editing them must not orphan a supernet run's checkpoints.
_NOT_TRAINING_CODE = frozenset({"finetune.py"})


def _code_digest() -> str:
    """sha256 of the training and supernet sources: a checkpoint written by other training
    code is not resumed (its weights came from a different procedure)."""
    import onceflow.supernet
    import onceflow.train

    h = hashlib.sha256(torch.__version__.encode())
    for pkg in (onceflow.train, onceflow.supernet):
        for f in sorted(Path(next(iter(pkg.__path__))).glob("*.py")):
            if pkg is onceflow.train and f.name in _NOT_TRAINING_CODE:
                continue
            h.update(f"{pkg.__name__}/{f.name}\0".encode() + f.read_bytes())
    return h.hexdigest()


def fingerprint(
    space: SearchSpace,
    cfg: TrainConfig,
    seed: int,
    data: PreparedData,
    world: int,
    device: torch.device | str = "cpu",
) -> str:
    """Identity of a training run: everything that changes the weights it produces -- the
    space, the train params (not the checkpoint cadence), the seed, the prepared data's
    content (``content_sha256``), the number of ranks and the device kind, and the training
    code and torch version. A checkpoint of another identity is never resumed."""
    train = cfg.model_dump(mode="json", exclude={"checkpoint_every_steps", "keep_checkpoints"})
    blob = json.dumps(
        {
            "space": space.to_json(),
            "train": train,
            "seed": seed,
            "data": data_identity(data),
            "n": len(data.train),
            "world": world,
            "device": torch.device(device).type,
            "code": _code_digest(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def step_archs(
    space: SearchSpace, phase: PhaseConfig, n_random: int, seed: int, g: int
) -> list[Arch]:
    """The sandwich of global step ``g``: [max, min, random...] (the same on every rank)."""
    rng = np.random.default_rng([seed, 0x5A3D, g])
    archs = [space.max_arch(), space.min_arch(elastic=phase.elastic)]
    archs += [space.sample(rng, elastic=phase.elastic) for _ in range(n_random)]
    return list(dict.fromkeys(archs))  # a phase with nothing elastic trains the max subnet once


def batch_indices(
    n_train: int, plan: _Plan, seed: int, phase: int, s: int, ctx: DistContext
) -> np.ndarray:
    """Train indices of this rank's share of step ``s`` of ``phase`` (drop-last epochs)."""
    epoch, b = divmod(s, plan.steps_per_epoch)
    perm = np.random.default_rng([seed, 0xDA7A, phase, epoch]).permutation(n_train)
    idx = perm[b * plan.batch_size : (b + 1) * plan.batch_size]
    return np.sort(idx[ctx.rank :: ctx.world_size])


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
) -> torch.Tensor:
    if cfg.distill == "kl":
        return kl_distill(student, teacher)
    if cfg.distill == "alpha":
        return alpha_distill(student, teacher, cfg.alpha_min, cfg.alpha_max, cfg.alpha_clip)
    return F.cross_entropy(student, y, label_smoothing=cfg.label_smoothing)


def sandwich_step(
    net: Supernet,
    optimizer: torch.optim.Optimizer,
    x_native: torch.Tensor,
    y: torch.Tensor,
    archs: list[Arch],
    cfg: TrainConfig,
    ctx: DistContext = SINGLE_PROCESS,
) -> tuple[float, float]:
    """One sandwich step on a normalized NCHW batch at native size; returns (max-subnet loss,
    mean loss of the other subnets). The optimizer steps; the scheduler is the caller's."""
    optimizer.zero_grad(set_to_none=True)
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    inputs: dict[int, torch.Tensor] = {}
    teacher = None
    losses: list[float] = []
    for arch in archs:
        if arch.resolution not in inputs:
            inputs[arch.resolution] = resize(x_native, arch.resolution).contiguous(
                memory_format=memory
            )
        net.set_active(arch)
        logits = net(inputs[arch.resolution])
        if teacher is None:
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            teacher = logits.detach()
        else:
            loss = distill_loss(logits, teacher, y, cfg)
        loss.backward()
        losses.append(float(loss.detach()))
    allreduce_gradients(net, ctx)
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    optimizer.step()
    rest = losses[1:]
    return losses[0], (sum(rest) / len(rest) if rest else float("nan"))


class _Session:
    """Mutable state of one training run (what a checkpoint holds)."""

    def __init__(self, net: Supernet, cfg: TrainConfig, plan: _Plan) -> None:
        self.net, self.cfg, self.plan = net, cfg, plan
        self.phase = 0
        self.step_in_phase = 0
        self.global_step = 0
        self.history: list[dict] = []
        self.seconds = 0.0
        self.loss_sums = [0.0, 0.0, 0]  # max loss, others' loss, steps in current epoch
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    def start_phase(self) -> None:
        p = self.cfg.phases[self.phase]
        self.optimizer = make_optimizer(self.net, p.lr, self.cfg.momentum, self.cfg.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer, self.plan.warmup_steps[self.phase], self.plan.phase_steps[self.phase]
        )

    def state(self, fp: str) -> dict:
        assert self.optimizer is not None and self.scheduler is not None
        return {
            "fingerprint": fp,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "phase": self.phase,
            "step_in_phase": self.step_in_phase,
            "global_step": self.global_step,
            "history": self.history,
            "seconds": self.seconds,
            "loss_sums": list(self.loss_sums),
            "rng_torch": torch.get_rng_state(),
        }

    def restore(self, st: dict) -> None:
        self.net.load_state_dict(st["model"])
        self.phase = int(st["phase"])
        self.step_in_phase = int(st["step_in_phase"])
        self.global_step = int(st["global_step"])
        self.history = list(st["history"])
        self.seconds = float(st["seconds"])
        self.loss_sums = list(st["loss_sums"])
        torch.set_rng_state(st["rng_torch"])
        self.start_phase()
        assert self.optimizer is not None and self.scheduler is not None
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])


def _resume(
    sess: _Session, directory: Path | None, fp: str, ctx: DistContext, device: torch.device
) -> bool:
    if directory is None:
        return False
    found = ckpt.load_latest_checkpoint(directory, map_location=device)
    if found is None or found[0].get("fingerprint") != fp:
        if ckpt.checkpoint_files(directory):
            # Stale files must go: left in place they would outrank (and prune) this run's own
            # checkpoints, which are numbered by step.
            log.warning(
                "checkpoints in %s are unreadable or belong to other params/data/code; "
                "starting fresh",
                directory,
            )
            barrier(ctx)
            if ctx.is_main:
                ckpt.clear_checkpoints(directory)
            barrier(ctx)
        return False
    state, path = found
    try:
        sess.restore(state)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"{path}: carries this run's fingerprint but its contents do not fit it "
            f"({type(err).__name__}: {first}); delete it (or {directory}/) to start fresh"
        ) from None
    log.info("resumed from %s (phase %d, step %d)", path, sess.phase, sess.global_step)
    return True


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
    stop_at_step: int | None = None,
    progress: bool = True,
    only_arch: Arch | None = None,
) -> TrainOutcome:
    """Train a supernet over ``space`` on ``data.train``; resume from ``checkpoint_dir`` if it
    holds a checkpoint of the same run. ``on_epoch`` gets each epoch's metrics (rank 0 only,
    replayed from the checkpoint on resume). ``stop_at_step`` stops after that global step (a
    simulated kill, for tests). ``only_arch`` trains that one subnet alone with the same recipe
    (every step is ``[only_arch]`` with the label loss: no sandwich, no distillation), the
    from-scratch baseline the weight-sharing benchmark compares against."""
    device = torch.device(device)
    n_train = len(data.train)
    if n_train == 0:
        raise DataError("prepared train split is empty; check params data.max_train")
    plan = make_plan(n_train, cfg)
    if plan.batch_size < ctx.world_size:
        raise DataError(f"batch of {plan.batch_size} cannot be split over {ctx.world_size} ranks")
    torch.manual_seed(seed)
    net = Supernet(space).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    broadcast_state(net, ctx)
    sess = _Session(net, cfg, plan)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fp = fingerprint(space, cfg, seed, data, ctx.world_size, device)
    if only_arch is not None:
        space.validate(only_arch)
        fp = hashlib.sha256(f"{fp}:{only_arch}".encode()).hexdigest()[:16]
    _resume(sess, directory, fp, ctx, device)
    first_step = sess.global_step
    if on_epoch is not None and ctx.is_main:
        for rec in sess.history:
            on_epoch(rec)

    images = torch.from_numpy(np.array(data.train.images))  # in memory (uint8), writable
    labels = torch.from_numpy(np.array(data.train.labels))
    bar = Progress(
        plan.total_steps,
        "train_supernet",
        initial=sess.global_step,
        enabled=progress and ctx.is_main,
        interval_s=30.0,
        unit="steps",
    )
    t0 = time.perf_counter() - sess.seconds
    done = sess.global_step >= plan.total_steps
    while not done:
        p = sess.phase
        phase = cfg.phases[p]
        if sess.step_in_phase >= plan.phase_steps[p]:  # phase finished: move on
            sess.phase += 1
            sess.step_in_phase = 0
            done = sess.phase >= len(cfg.phases)
            continue
        if sess.step_in_phase == 0:
            if phase.reorder_channels:
                log.info("phase %s: re-ordering channels by importance", phase.name)
                net.reorder_channels()
            sess.start_phase()
            log.info(
                "phase %s: %d steps, elastic %s", phase.name, plan.phase_steps[p], phase.elastic
            )
        assert sess.optimizer is not None and sess.scheduler is not None
        s, g = sess.step_in_phase, sess.global_step
        idx = torch.from_numpy(batch_indices(n_train, plan, seed, p, s, ctx))
        gen = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, g, ctx.rank]).generate_state(1)[0])
        )
        x_u8 = augment(images[idx], gen, cfg.hflip, cfg.crop_padding)
        x = to_input(x_u8, data.meta, int(x_u8.shape[1]), device)
        y = labels[idx].to(device)
        net.train()
        archs = (
            [only_arch]
            if only_arch is not None
            else step_archs(space, phase, cfg.n_random, seed, g)
        )
        l_max, l_rest = sandwich_step(net, sess.optimizer, x, y, archs, cfg, ctx)
        lr = sess.optimizer.param_groups[0]["lr"]
        sess.scheduler.step()
        sess.step_in_phase += 1
        sess.global_step += 1
        sess.loss_sums[0] += l_max
        sess.loss_sums[1] += l_rest if math.isfinite(l_rest) else 0.0
        sess.loss_sums[2] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{l_max:.3f}", phase=phase.name, refresh=False)

        epoch_end = (
            sess.step_in_phase % plan.steps_per_epoch == 0
            or sess.step_in_phase == plan.phase_steps[p]
        )
        if epoch_end:
            sess.seconds = time.perf_counter() - t0
            rec = _epoch_record(sess, phase, lr, data, cfg, seed, ctx, device)
            sess.history.append(rec)
            if on_epoch is not None and ctx.is_main:
                on_epoch(rec)
            log.info("epoch %d (%s): %s", rec["epoch"], phase.name, _fmt_record(rec))
        if directory is not None and (
            epoch_end or sess.global_step % cfg.checkpoint_every_steps == 0
        ):
            sess.seconds = time.perf_counter() - t0
            if ctx.is_main:
                ckpt.save_checkpoint(
                    directory, sess.state(fp), sess.global_step, cfg.keep_checkpoints
                )
            barrier(ctx)
        if stop_at_step is not None and sess.global_step >= stop_at_step:
            bar.close()
            return TrainOutcome(
                net, sess.history, time.perf_counter() - t0, _epochs(sess), False,
                sess.global_step - first_step,
            )  # fmt: skip
        done = sess.global_step >= plan.total_steps
    bar.close()
    check_in_sync(net, ctx)
    net.set_active(only_arch if only_arch is not None else space.max_arch())
    return TrainOutcome(
        net, sess.history, time.perf_counter() - t0, _epochs(sess), True,
        sess.global_step - first_step,
    )  # fmt: skip


def _epochs(sess: _Session) -> float:
    return round(sess.global_step / sess.plan.steps_per_epoch, 4)


def _epoch_record(
    sess: _Session,
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
            rec[f"val_acc_{name}"] = subnet_accuracy(
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
        out[f"val_acc_{name}"] = subnet_accuracy(
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
