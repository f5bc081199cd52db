"""Step plan, learning-rate schedule and optimizer set-up (SGD Nesterov, no weight decay on
BN/bias)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from onceflow.config import TrainConfig


@dataclass(frozen=True)
class Plan:
    """A training run in optimizer steps: params ``train`` against the train split's size."""

    steps_per_epoch: int
    batch_size: int  # global
    phase_steps: tuple[int, ...]
    warmup_steps: tuple[int, ...]

    @property
    def total_steps(self) -> int:
        return sum(self.phase_steps)


def make_plan(n_train: int, cfg: TrainConfig) -> Plan:
    batch = min(cfg.batch_size, n_train)
    spe = max(1, n_train // batch)
    steps = tuple(max(1, round(p.epochs * spe)) for p in cfg.phases)
    warm = tuple(round(p.warmup_epochs * spe) for p in cfg.phases)
    return Plan(spe, batch, steps, warm)


class WarmupCosine:
    """LR multiplier at step t: linear warmup 0 -> 1 over ``warmup`` steps, then cosine 1 -> 0
    over the remaining ``total - warmup`` steps. A callable object (not a lambda) so LambdaLR's
    state_dict stores it and checkpoints load with weights_only=True."""

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup = int(warmup)
        self.total = max(int(total), 1)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        t = (step - self.warmup) / max(self.total - self.warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: BN affine, biases and the kernel-transform
    matrices (which start at identity and should not be pulled to zero) get none."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or ".transforms." in name else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module, lr: float, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=momentum > 0
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps))
