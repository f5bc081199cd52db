"""What a training checkpoint holds and when it is resumed.

A run's identity (:func:`fingerprint`) covers everything that changes the weights it produces;
a checkpoint of another identity is never resumed. Each identity has its own folder under the
checkpoint root (:func:`identity_dir`), so runs of other params (DVC experiments one after
another in one workspace, or side by side on a shared per-host cache) neither resume nor delete
each other's checkpoints, and returning to earlier params resumes their run. The state
(:class:`RunState`) is weights, optimizer, schedule, position (phase, step), history and the
torch RNG: a run resumed from it continues exactly where it was taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from onceflow import hostcache, identity
from onceflow.config import TrainConfig
from onceflow.data.prepared import PreparedData, data_identity
from onceflow.environment import installed_versions
from onceflow.errors import DataError
from onceflow.identity import LIBRARY_ROOTS
from onceflow.io import sha256_json
from onceflow.supernet import SearchSpace, Supernet
from onceflow.train import checkpoint as ckpt
from onceflow.train.distributed import DistContext, broadcast_bytes
from onceflow.train.schedule import Plan, make_optimizer, make_scheduler

log = logging.getLogger(__name__)

# The module supernet training runs (the stage calls it): its import closure inside onceflow is
# the training code (packaging's fine-tune is not in it).
TRAINING_MODULE = "onceflow.train.pipeline"
# Libraries whose versions change the weights: torch (kernels), numpy (batch order, subnet
# sampling), numba (the depthwise weight-gradient kernel, supernet/dwconv.py).
TRAINING_LIBRARIES = ("torch", "numpy", "numba")


def code_digest(roots: Mapping[str, Path] = LIBRARY_ROOTS) -> str:
    """sha256 of the training code (the import closure of :data:`TRAINING_MODULE` under
    ``roots``) and the versions of :data:`TRAINING_LIBRARIES`: a checkpoint written by other
    code or libraries is not resumed (its weights came from a different procedure)."""
    versions = ", ".join(f"{k} {v}" for k, v in installed_versions(TRAINING_LIBRARIES).items())
    return identity.code_digest(TRAINING_MODULE, roots, extra=versions)


# Train params that do not change the weights: the checkpoint cadence, and how the ranks are
# launched (their number is ``world``: 2 nodes x 1 rank train what 1 node x 2 ranks do).
_NOT_IDENTITY = frozenset(
    {
        "checkpoint_every_steps",
        "keep_checkpoints",
        "processes",
        "nodes",
        "rdzv_endpoint",
        "max_restarts",
        "rdzv_timeout_s",
        "rdzv_last_call_s",
    }
)


def world_key(cfg: TrainConfig, world: int) -> int | str:
    """The ``world`` of a run's identity: its number of ranks, or "elastic" for a job over a
    range of nodes, whose number of ranks changes when a node is lost or joins (each such
    restart resumes the same run from its last checkpoint)."""
    lo, hi = cfg.node_range
    return world if lo == hi else "elastic"


def fingerprint(
    space: SearchSpace,
    cfg: TrainConfig,
    seed: int,
    data: PreparedData,
    world: int | str,
    device: torch.device | str = "cpu",
) -> str:
    """Identity of a training run: everything that changes the weights it produces -- the
    space, the train params (not the checkpoint cadence or the launch), the seed, the prepared
    data's content (``content_sha256``), the number of ranks (:func:`world_key`) and the
    device kind, and the training code and library versions (:func:`code_digest`). A
    checkpoint of another identity is never resumed."""
    train = cfg.model_dump(mode="json", exclude=set(_NOT_IDENTITY))
    return sha256_json(
        {
            "space": space.to_json(),
            "train": train,
            "seed": seed,
            "data": data_identity(data),
            "n": len(data.train),
            "world": world,
            "device": torch.device(device).type,
            "code": code_digest(),
        }
    )[:16]


class RunState:
    """Mutable state of one training run (what a checkpoint holds)."""

    def __init__(self, net: Supernet, cfg: TrainConfig, plan: Plan) -> None:
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


def identity_dir(root: Path | None, fp: str, ctx: DistContext) -> Path | None:
    """``root/<fp>``: the checkpoints of the run of identity ``fp``. Checkpoint files directly
    in ``root`` (the layout before identity folders) are cleared: they cannot be told apart."""
    if root is None:
        return None
    if ctx.is_main:  # only the main rank touches checkpoints (see :func:`resume`)
        if ckpt.checkpoint_files(root):
            log.warning(
                "checkpoints directly in %s predate per-identity folders (their params/data/"
                "code cannot be checked); removing them, starting fresh",
                root,
            )
            ckpt.clear_checkpoints(root)
        hostcache.prune_siblings(root / fp)  # folders of runs nobody has touched for weeks
    return root / fp


def resume(
    sess: RunState, directory: Path | None, fp: str, ctx: DistContext, device: torch.device
) -> bool:
    """Restore ``sess`` from the newest checkpoint in the main rank's ``directory`` carrying
    fingerprint ``fp``; False (a fresh start) when there is none. Only the main rank reads
    checkpoints (the other ranks may run on machines that have none): it sends the state to
    the others."""
    state, path = _own_checkpoint(directory, fp) if ctx.is_main else (None, None)
    if ctx.enabled:
        payload = broadcast_bytes(ckpt.encode_state(state) if state else b"", ctx, device)
        if not ctx.is_main and payload:
            state = ckpt.decode_state(payload)
    if state is None:
        return False
    try:
        sess.restore(state)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"{path or 'the main rank checkpoint'}: carries this run's fingerprint but its "
            f"contents do not fit it ({type(err).__name__}: {first}); delete it (or "
            f"{directory}/) to start fresh"
        ) from None
    if ctx.is_main:
        log.info("resumed from %s (phase %d, step %d)", path, sess.phase, sess.global_step)
        written = state.get("world")
        if written is not None and int(written) != ctx.world_size:
            log.info(
                "elastic restart: step %d was reached on %d ranks; going on with %d",
                sess.global_step, int(written), ctx.world_size,
            )  # fmt: skip
    return True


def _own_checkpoint(directory: Path | None, fp: str) -> tuple[dict | None, Path | None]:
    """The newest checkpoint in ``directory`` of run ``fp``; other runs' files are cleared."""
    if directory is None:
        return None, None
    found = ckpt.load_latest_checkpoint(directory, map_location="cpu")
    if found is not None and found[0].get("fingerprint") == fp:
        return found
    if ckpt.checkpoint_files(directory):
        # Stale files must go: left in place they would outrank (and prune) this run's own
        # checkpoints, which are numbered by step.
        log.warning(
            "checkpoints in %s are unreadable or belong to other params/data/code; starting fresh",
            directory,
        )
        ckpt.clear_checkpoints(directory)
    return None, None
