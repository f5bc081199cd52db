"""AttentiveNAS-style sampling: the sandwich's random subnets, picked best or worst by a proxy.

Plain sandwich sampling draws each of the ``n_random`` subnets uniformly. With
``train.attentive_pool`` K >= 2 each is instead the best or the worst of K uniform candidates
(AttentiveNAS's BestUp / WorstUp), scored by a cheap proxy where higher means better: the
subnet's MACs ("flops": a bigger subnet is the better one) or minus its label loss on the
step's batch ("loss", averaged over ranks so every rank picks the same subnets). The step still
trains 2 + ``n_random`` subnets: the same cost per step as plain sampling, plus the proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from onceflow.config import PhaseConfig, TrainConfig
from onceflow.inputs import resize
from onceflow.supernet import Arch, SearchSpace, Supernet
from onceflow.supernet.specs import LayerSpec
from onceflow.train.distributed import SINGLE_PROCESS, DistContext, mean_over_ranks

# Scores of candidate subnets, one per candidate; higher = better.
Proxy = Callable[[Sequence[Arch]], np.ndarray]


def layer_macs(s: LayerSpec) -> float:
    """Multiply-accumulates of one layer of an extracted subnet (convolutions and SE)."""
    if s.kind == "stem":
        return float(s.out_res**2 * s.kernel**2 * s.in_ch * s.out_ch)
    if s.kind == "head":
        return float(s.in_res**2 * s.in_ch * s.mid_ch + s.mid_ch * s.out_ch)
    expand = s.in_res**2 * s.in_ch * s.mid_ch
    dw = s.out_res**2 * s.kernel**2 * s.mid_ch
    project = s.out_res**2 * s.mid_ch * s.out_ch
    return float(expand + dw + project + (2 * s.mid_ch * s.se_ch if s.se else 0))


def arch_macs(space: SearchSpace, arch: Arch) -> float:
    return sum(layer_macs(s) for s in space.layer_specs(arch))


def flops_proxy(space: SearchSpace) -> Proxy:
    return lambda archs: np.array([arch_macs(space, a) for a in archs])


def loss_proxy(
    net: Supernet, x_native: torch.Tensor, y: torch.Tensor, ctx: DistContext = SINGLE_PROCESS
) -> Proxy:
    """Minus each candidate's label cross-entropy on the batch (no gradients; averaged over
    ranks). The passes run in train mode, as training does, so they also move the BN running
    statistics, which evaluation recalibrates anyway."""

    @torch.no_grad()
    def score(archs: Sequence[Arch]) -> np.ndarray:
        out = []
        for arch in archs:
            net.set_active(arch)
            loss = F.cross_entropy(net(resize(x_native, arch.resolution)), y)
            out.append(-mean_over_ranks(float(loss), ctx, x_native.device))
        return np.array(out)

    return score


def pick(scores: np.ndarray, which: str) -> int:
    """Index of the best (highest score) or worst candidate; ties go to the first."""
    return int(np.argmax(scores) if which == "best" else np.argmin(scores))


def which_of_step(cfg: TrainConfig, g: int, i: int) -> str:
    """ "best" or "worst" for random slot ``i`` of global step ``g``."""
    if cfg.attentive_pick != "best_worst":
        return cfg.attentive_pick
    return "best" if (g + i) % 2 == 0 else "worst"


def attentive_step_archs(
    space: SearchSpace, phase: PhaseConfig, cfg: TrainConfig, seed: int, g: int, proxy: Proxy
) -> list[Arch]:
    """The sandwich of global step ``g``: [max, min, picked...], each picked subnet the best or
    worst of ``cfg.attentive_pool`` uniform candidates by ``proxy`` (the same on every rank:
    the candidates come from the (seed, g) RNG, the scores are rank-averaged)."""
    rng = np.random.default_rng([seed, 0x5A3D, g])
    archs = [space.max_arch(), space.min_arch(elastic=phase.elastic)]
    for i in range(cfg.n_random):
        cands = [space.sample(rng, elastic=phase.elastic) for _ in range(cfg.attentive_pool)]
        archs.append(cands[pick(proxy(cands), which_of_step(cfg, g, i))])
    return list(dict.fromkeys(archs))
