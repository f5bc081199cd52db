"""Data-parallel training with torch.distributed (launched by torchrun: gloo on CPU, NCCL on GPU).

Every rank runs the same sandwich step on its shard of the global batch with the same subnets
(subnet RNGs derive from the seed and the step, never from the rank); the gradients accumulated
over the sandwich's backward passes are averaged across ranks in one flat all-reduce before the
optimizer step. This is what DistributedDataParallel does per backward, done once per step,
which fits subnets that leave different parameters unused in each pass.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from onceflow.errors import BackendUnavailable, ConfigError, OnceflowError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job (world_size 1 = single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

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
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


def init_distributed(device: str, backend: str = "auto") -> DistContext:
    """Join the torchrun job if WORLD_SIZE > 1 (env from torchrun), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = resolve_device(device, ctx).type == "cuda"
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl" and not use_cuda:
        raise ConfigError("params.yaml train.ddp_backend 'nccl' needs base.device cuda")
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    log.info("rank %d/%d joined (%s)", ctx.rank, world, backend)
    return ctx


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
        dist.broadcast(t, src=0)


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


def die_with_parent(parent_pid: int) -> None:
    """Make this process die when ``parent_pid`` (its launcher) does, however it dies.

    Linux: the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``), which
    also ends a rank blocked in a collective's futex wait, where no Python handler would run.
    Elsewhere a daemon thread polls the parent id. A parent that died before this call is
    caught by comparing ``getppid()`` with ``parent_pid``.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d)", ctypes.get_errno())
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    # The launcher owns stopping: a rank ends at once on its signal (a Ctrl-C reaches the whole
    # process group) instead of unwinding into a collective whose peer is already gone.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


_PR_SET_PDEATHSIG = 1


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


def _stage_worker(module: str, argv: list[str], parent_pid: int) -> int:
    """One rank of a locally launched job: run stage ``module``'s main like ``python -m``."""
    import importlib

    from onceflow import stage

    die_with_parent(parent_pid)
    return stage.run(importlib.import_module(module).main, argv)


def remove_partial(
    outputs: Sequence[str | os.PathLike[str]], keep: Collection[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Remove what an interrupted or failed run left of ``outputs``: the hidden temp siblings
    of atomic writes (``.<name>.*.tmp``: a dead writer's, whatever their age), temp files
    inside an output directory, and each output not in ``keep`` (those that existed before
    the run, left alone)."""
    kept = {Path(k) for k in keep}
    removed = []
    for out in map(Path, outputs):
        leftovers = list(out.parent.glob(f".{out.name}.*.tmp")) if out.parent.is_dir() else []
        if out.is_dir():  # e.g. checkpoints: half-written files of their own atomic writes
            leftovers += list(out.glob(".*.tmp"))
        created = out not in kept and (out.exists() or out.is_symlink())
        for p in leftovers + ([out] if created else []):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def removing_partial(outputs: Sequence[str | os.PathLike[str]]) -> Iterator[None]:
    """Run the block; if it raises, remove the ``outputs`` it created (see remove_partial)."""
    existed = [Path(o) for o in outputs if Path(o).exists()]
    try:
        yield
    except BaseException:
        remove_partial(outputs, keep=existed)
        raise


class TrainingInterrupted(OnceflowError):
    """The launcher was told to stop (SIGTERM/SIGINT/SIGHUP); its ranks are gone."""


def launch_local(
    nproc: int,
    module: str,
    argv: list[str],
    *,
    outputs: Sequence[str | os.PathLike[str]] = (),
    scratch: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Run stage ``module`` (e.g. "stages.train_supernet") with ``argv`` as ``nproc`` local
    ranks of one torch.distributed job, as ``torchrun --standalone --nproc_per_node=nproc``
    does (same launcher API). Raises an OnceflowError carrying the worst rank's exit code.

    Ranks never outlive the launcher (:func:`die_with_parent`). On SIGTERM/SIGINT/SIGHUP the
    launcher stops its ranks, removes partial ``outputs`` (and temp files in ``scratch``,
    e.g. half-written checkpoints; complete checkpoints stay for resuming) and raises
    :class:`TrainingInterrupted` with exit code 128 + the signal number."""
    import uuid

    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
        shutdown_timeout=10,  # seconds between SIGTERM and SIGKILL for ranks that linger
    )
    existed = [Path(o) for o in [*outputs, *scratch] if Path(o).exists()]
    remove_partial([*outputs, *scratch], keep=[*outputs, *scratch])  # a killed run's temp files
    log.info("launching %d local ranks (params train.processes)", nproc)
    try:
        codes = elastic_launch(config, _stage_worker)(module, list(argv), os.getpid())
    except SignalException as err:
        removed = remove_partial([*outputs, *scratch], keep=[*existed, *scratch])
        stopped = TrainingInterrupted(
            f"training stopped by {signal.Signals(err.sigval).name}: its {nproc} ranks are "
            f"stopped and {len(removed)} partial output(s) removed; rerun to resume from the "
            "last checkpoint"
        )
        stopped.exit_code = 128 + int(err.sigval)
        raise stopped from None
    except ChildFailedError as err:
        raise OnceflowError(f"a training rank crashed: {err}") from None
    worst = max(int(c or 0) for c in codes.values())
    if worst:
        failed = OnceflowError(f"a training rank exited with code {worst} (its log is above)")
        failed.exit_code = worst
        raise failed
