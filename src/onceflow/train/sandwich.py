"""The sandwich rule: one training step over the max, min and random subnets of a batch.

One step (every rank, same subnets): the max subnet learns from the labels (label-smoothed CE);
the min subnet and ``n_random`` random subnets learn from the max subnet's soft labels (KL or
alpha-divergence: in-place distillation), plus ``student_ce`` times the label loss. Each subnet
sees the batch at its own resolution. Gradients of all passes are summed, averaged over ranks,
clipped, and one optimizer step taken.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from onceflow.config import PhaseConfig, TrainConfig
from onceflow.inputs import resize
from onceflow.supernet import Arch, SearchSpace, Supernet
from onceflow.train.distributed import SINGLE_PROCESS, DistContext, allreduce_gradients
from onceflow.train.losses import alpha_distill, kl_distill


def step_archs(
    space: SearchSpace, phase: PhaseConfig, n_random: int, seed: int, g: int
) -> list[Arch]:
    """The sandwich of global step ``g``: [max, min, random...] (the same on every rank)."""
    rng = np.random.default_rng([seed, 0x5A3D, g])
    archs = [space.max_arch(), space.min_arch(elastic=phase.elastic)]
    archs += [space.sample(rng, elastic=phase.elastic) for _ in range(n_random)]
    return list(dict.fromkeys(archs))  # a phase with nothing elastic trains the max subnet once


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, cfg: TrainConfig
) -> torch.Tensor:
    """A non-max subnet's loss: distillation from the max subnet's logits (``cfg.distill``)
    plus ``cfg.student_ce`` times the label cross-entropy; the label loss alone with "none".
    The label loss is smoothed as the max subnet's unless ``cfg.regularize_max_only``."""
    smoothing = 0.0 if cfg.regularize_max_only else cfg.label_smoothing
    if cfg.distill == "none":
        return F.cross_entropy(student, y, label_smoothing=smoothing)
    if cfg.distill == "kl":
        loss = kl_distill(student, teacher)
    else:
        loss = alpha_distill(student, teacher, cfg.alpha_min, cfg.alpha_max, cfg.alpha_clip)
    if cfg.student_ce:
        loss = loss + cfg.student_ce * F.cross_entropy(student, y, label_smoothing=smoothing)
    return loss


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
    dropout = net.head.dropout
    for arch in archs:
        # regularize_max_only: the head's dropout on the first (max) subnet only
        net.head.dropout = 0.0 if cfg.regularize_max_only and teacher is not None else dropout
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
    net.head.dropout = dropout
    allreduce_gradients(net, ctx)
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    optimizer.step()
    rest = losses[1:]
    return losses[0], (sum(rest) / len(rest) if rest else float("nan"))
