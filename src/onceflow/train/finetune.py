"""Fine-tuning one static subnet with distillation from a teacher (what packaging runs).

SGD (Nesterov, momentum 0.9, no weight decay) on the train split with a cosine schedule from
params ``package.finetune_lr`` to 0; loss = CE + ``kd_ratio`` x KL(teacher || student), the
teacher seeing the same images at its own resolution. The optimizer, the schedule, the
distillation loss and the batch order are the supernet training's own pieces.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from onceflow.config import PackageConfig
from onceflow.data.prepared import PreparedData
from onceflow.inputs import to_input
from onceflow.train.data import shuffled_batches
from onceflow.train.losses import kl_distill
from onceflow.train.schedule import make_optimizer, make_scheduler

MOMENTUM = 0.9


def finetune(
    student: nn.Module,
    teacher: nn.Module | None,
    data: PreparedData,
    *,
    resolution: int,
    teacher_resolution: int,
    cfg: PackageConfig,
    seed: int,
) -> list[float]:
    """Fine-tune ``student`` in place on ``data.train`` at ``resolution``; returns the mean loss
    of each epoch. The student is left in eval mode; its BN statistics need re-estimating."""
    n = len(data.train)
    labels = torch.as_tensor(np.array(data.train.labels))
    total = cfg.finetune_epochs * math.ceil(n / cfg.finetune_batch_size)
    opt = make_optimizer(student, cfg.finetune_lr, MOMENTUM, weight_decay=0.0)
    sched = make_scheduler(opt, warmup_steps=0, total_steps=total)
    gen = torch.Generator().manual_seed(seed)
    if teacher is not None:
        teacher.eval()
    student.train()
    losses = []
    for _ in range(cfg.finetune_epochs):
        running, steps = 0.0, 0
        for idx in shuffled_batches(n, cfg.finetune_batch_size, gen):
            u8 = data.train.images[idx]
            logits = student(to_input(u8, data.meta, resolution))
            loss = F.cross_entropy(logits, labels[idx])
            if teacher is not None and cfg.kd_ratio > 0:
                with torch.no_grad():
                    t = teacher(to_input(u8, data.meta, teacher_resolution))
                loss = loss + cfg.kd_ratio * kl_distill(logits, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running, steps = running + loss.item(), steps + 1
        losses.append(running / steps)
    student.eval()
    return losses
