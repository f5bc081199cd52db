"""Data-parallel training with torch.distributed, inside a rank (gloo on CPU, NCCL on GPU; the
ranks are started by :mod:`onceflow.train.launch` or by torchrun).

Every rank runs the same sandwich step on its shard of the global batch with the same subnets
(subnet RNGs derive from the seed and the step, never from the rank); the gradients accumulated
over the sandwich's backward passes are averaged across ranks in one flat all-reduce before the
optimizer step. This is what DistributedDataParallel does per backward, done once per step,
which fits subnets that leave different parameters unused in each pass.

Ranks are numbered the same way however the job is spread: the first node's ranks first (its
local rank 0 is rank 0, the one that reads and writes checkpoints and outputs), then each
joined node's in rendezvous order. torch's own rank order, which sorts nodes by host name and
process id, only picks the source of broadcasts. So 2 nodes x 1 rank shard the batch, seed the
augmentation and keep BN statistics exactly as 1 node x 2 ranks do.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from onceflow.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job (world_size 1 = single process)."""

    rank: int = 0  # onceflow's rank (see the module doc): shard, augmentation seed, writer
    world_size: int = 1
    local_rank: int = 0
    src: int = 0  # torch.distributed rank of rank 0: the source of broadcasts

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistContext()


def resolve_device(device: str, ctx: DistContext) -> torch.device:
    """params base.device (cpu | cuda | auto) -> this rank's torch device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                "params.yaml base.device is 'cuda' but no CUDA GPU is visible; set it to cpu/auto"
            )
        if ctx.local_rank >= torch.cuda.device_count():
            raise BackendUnavailable(
                f"local rank {ctx.local_rank} has no GPU of its own ({torch.cuda.device_count()} "
                "visible): one rank per GPU, so set params.yaml train.processes <= the GPU count"
            )
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


# Set (to "1") in the ranks of the job's first node by the launcher.
FIRST_NODE_ENV = "ONCEFLOW_FIRST_NODE"


def init_distributed(device: str, backend: str = "auto") -> DistContext:
    """Join the launched job if WORLD_SIZE > 1 (env from the launcher), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    physical, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = resolve_device(device, DistContext(physical, world, local)).type == "cuda"
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise ConfigError("params.yaml train.ddp_backend 'nccl' needs base.device cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    first = os.environ.get(FIRST_NODE_ENV) == "1"
    me = (0 if first else 1, int(os.environ.get("GROUP_RANK", "0")), local, physical)
    t = torch.tensor(me, dtype=torch.int64, device="cuda" if use_cuda else "cpu")
    rows = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(rows, t)
    order = logical_order([tuple(int(v) for v in r.tolist()) for r in rows])
    ctx = DistContext(order.index(physical), world, local, order[0])
    log.info("rank %d/%d joined (%s)", ctx.rank, world, backend)
    return ctx


def logical_order(rows: Sequence[tuple[int, ...]]) -> list[int]:
    """torch ranks in onceflow's rank order, from each rank's (0 on the first node else 1,
    node's rendezvous rank, local rank, torch rank)."""
    return [row[-1] for row in sorted(rows)]


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


@torch.no_grad()
def broadcast_state(model: nn.Module, ctx: DistContext) -> None:
    """Make every rank's parameters and buffers equal to rank 0's."""
    if not ctx.enabled:
        return
    for t in model.state_dict().values():
        dist.broadcast(t, src=ctx.src)


def broadcast_bytes(blob: bytes, ctx: DistContext, device: torch.device) -> bytes:
    """Rank 0's ``blob`` on every rank (the others pass anything, e.g. b"")."""
    dev = device if device.type == "cuda" else torch.device("cpu")
    size = torch.tensor([len(blob) if ctx.is_main else 0], dtype=torch.int64, device=dev)
    dist.broadcast(size, src=ctx.src)
    n = int(size.item())
    if n == 0:
        return b""
    if ctx.is_main:
        buf = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(dev)
    else:
        buf = torch.empty(n, dtype=torch.uint8, device=dev)
    dist.broadcast(buf, src=ctx.src)
    return blob if ctx.is_main else bytes(buf.cpu().numpy().tobytes())


@torch.no_grad()
def allreduce_gradients(model: nn.Module, ctx: DistContext) -> None:
    """Average ``.grad`` over ranks in one flat all-reduce. Parameters no subnet of this step
    used have no grad on any rank (all ranks run the same subnets) and are left untouched."""
    if not ctx.enabled:
        return
    params = [p for p in model.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def mean_over_ranks(value: float, ctx: DistContext, device: torch.device) -> float:
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


@torch.no_grad()
def check_in_sync(model: nn.Module, ctx: DistContext) -> None:
    """Raise if ranks hold different parameters (they must: same subnets, averaged grads)."""
    if not ctx.enabled:
        return
    params = list(model.parameters())
    dev = params[0].device
    s = torch.stack([p.double().sum() for p in params]).to(dev)
    lo, hi = s.clone(), s.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    worst = float((hi - lo).abs().max())
    if worst > 1e-6 * max(1.0, float(s.abs().max())):
        raise RuntimeError(f"data-parallel ranks diverged (max parameter-sum gap {worst:.3g})")
    log.info("rank %d: parameters in sync across %d ranks", ctx.rank, ctx.world_size)
