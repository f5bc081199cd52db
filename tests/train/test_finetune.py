"""Fine-tuning one extracted subnet with distillation (what packaging runs)."""

from __future__ import annotations

import numpy as np
import torch

from onceflow.config import PackageConfig
from onceflow.data.prepared import load_prepared
from onceflow.supernet import Supernet
from onceflow.train.data import shuffled_batches
from onceflow.train.finetune import finetune
from tests.supernet.helpers import tiny_space


def _subnets() -> tuple[torch.nn.Module, torch.nn.Module, int]:
    torch.manual_seed(0)
    net = Supernet(tiny_space()).eval()
    arch = net.space.min_arch()
    return net.extract(arch), net.extract(net.space.max_arch()), arch.resolution


def test_distillation_finetune_lowers_the_loss(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    cfg = PackageConfig(finetune_epochs=3, finetune_lr=0.05, finetune_batch_size=120)
    sub, teacher, res = _subnets()
    weights = [p.detach().clone() for p in sub.parameters()]
    losses = finetune(sub, teacher, data, resolution=res, teacher_resolution=28, cfg=cfg, seed=0)
    assert len(losses) == 3 and losses[2] < losses[0]  # CE + KL to the teacher goes down
    assert not sub.training and not teacher.training
    assert any(not torch.equal(a, b) for a, b in zip(weights, sub.parameters(), strict=True))


def test_finetune_is_deterministic_and_runs_without_a_teacher(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    cfg = PackageConfig(finetune_epochs=1, finetune_lr=0.05, finetune_batch_size=100)
    runs = []
    for _ in range(2):
        sub, _, res = _subnets()
        losses = finetune(sub, None, data, resolution=res, teacher_resolution=28, cfg=cfg, seed=3)
        runs.append((losses, [p.detach().clone() for p in sub.parameters()]))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) == 1
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


def test_shuffled_batches_cover_every_index_once_with_a_short_last_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = list(shuffled_batches(10, 4, gen))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    assert all((np.diff(b) > 0).all() for b in batches)  # sorted within a batch
    again = list(shuffled_batches(10, 4, gen))  # the generator moves on: a new order
    assert any(not np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
