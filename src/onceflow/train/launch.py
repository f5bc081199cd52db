"""Starting ranks: torch's elastic agent (c10d rendezvous) on this machine, as one node of a job.

One machine (params ``train.processes`` > 1) is ``torchrun --standalone``; several machines
(``train.nodes``) meet at a rendezvous endpoint that the first node (the DVC stage) hosts; the
others join it (:mod:`onceflow.train.nodes`). With ``train.max_restarts`` > 0 a failed rank or
a lost node makes every node's agent restart its ranks, which meet again and resume from the
last checkpoint; an elastic job (a node range) also takes in nodes that join later that way.

Ranks never outlive their launcher; a stop signal ends the job with partial outputs removed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from onceflow.config import check_rdzv_endpoint
from onceflow.errors import OnceflowError
from onceflow.io import remove_partial
from onceflow.train.distributed import FIRST_NODE_ENV

log = logging.getLogger(__name__)


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


def _stage_worker(module: str, argv: list[str], parent_pid: int, first_node: bool) -> int:
    """One rank of a launched job: run ``module``'s main like ``python -m``."""
    import importlib

    from onceflow import stage

    die_with_parent(parent_pid)
    os.environ[FIRST_NODE_ENV] = "1" if first_node else "0"
    return stage.run(importlib.import_module(module).main, argv)


class TrainingInterrupted(OnceflowError):
    """The launcher was told to stop (SIGTERM/SIGINT/SIGHUP); its ranks are gone."""


class NodesMissing(OnceflowError):
    """The rendezvous timed out before the job had its minimum number of nodes."""


@dataclass(frozen=True)
class Rendezvous:
    """Where and how this node's agent meets the job's other nodes (the default: one node)."""

    endpoint: str = "localhost:0"  # HOST:PORT; port 0 (one node only) picks a free one
    run_id: str = ""  # the job's id, the same on every node ("" = a new one)
    min_nodes: int = 1
    max_nodes: int = 1
    first_node: bool = True  # hosts the rendezvous store; its local rank 0 is rank 0
    max_restarts: int = 0  # restarts of this node's ranks after a failure or a lost node
    join_timeout_s: int = 600  # wait this long for min_nodes
    last_call_s: int = 15  # then this long for more, up to max_nodes

    def describe(self) -> str:
        lo, hi = self.min_nodes, self.max_nodes
        return f"{lo} node(s)" if lo == hi else f"{lo} to {hi} nodes"


def launch(
    nproc: int,
    module: str,
    argv: list[str],
    *,
    rdzv: Rendezvous = Rendezvous(),
    outputs: Sequence[str | os.PathLike[str]] = (),
    scratch: Sequence[str | os.PathLike[str]] = (),
) -> None:
    """Run ``module``'s main (e.g. "stages.train_supernet") with ``argv`` as ``nproc`` ranks on
    this machine, one node of the job ``rdzv`` describes (torchrun's launcher API). Raises an
    OnceflowError carrying the worst rank's exit code; :class:`NodesMissing` when too few
    nodes came.

    Ranks never outlive the launcher (:func:`die_with_parent`). On SIGTERM/SIGINT/SIGHUP the
    launcher stops its ranks, removes partial ``outputs`` (and temp files in ``scratch``,
    e.g. half-written checkpoints; complete checkpoints stay for resuming) and raises
    :class:`TrainingInterrupted` with exit code 128 + the signal number."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import (
        RendezvousConnectionError,
        RendezvousTimeoutError,
    )
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    run_id = rdzv.run_id or str(uuid.uuid4())
    config = LaunchConfig(
        min_nodes=rdzv.min_nodes,
        max_nodes=rdzv.max_nodes,
        nproc_per_node=nproc,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=rdzv.endpoint,
        rdzv_configs={
            "is_host": rdzv.first_node,
            "join_timeout": rdzv.join_timeout_s,
            "last_call_timeout": rdzv.last_call_s,
        },
        max_restarts=rdzv.max_restarts,
        monitor_interval=0.5,
        start_method="spawn",
        shutdown_timeout=10,  # seconds between SIGTERM and SIGKILL for ranks that linger
    )
    existed = [Path(o) for o in [*outputs, *scratch] if Path(o).exists()]
    remove_partial([*outputs, *scratch], keep=[*outputs, *scratch])  # a killed run's temp files
    if rdzv.max_nodes > 1:
        log.info("node of a job of %s at %s: %d local ranks", rdzv.describe(), rdzv.endpoint, nproc)
    else:
        log.info("launching %d local ranks (params train.processes)", nproc)
    try:
        codes = elastic_launch(config, _stage_worker)(
            module, list(argv), os.getpid(), rdzv.first_node
        )
    except SignalException as err:
        removed = remove_partial([*outputs, *scratch], keep=[*existed, *scratch])
        stopped = TrainingInterrupted(
            f"training stopped by {signal.Signals(err.sigval).name}: its {nproc} ranks are "
            f"stopped and {len(removed)} partial output(s) removed; rerun to resume from the "
            "last checkpoint"
        )
        stopped.exit_code = 128 + int(err.sigval)
        raise stopped from None
    except RendezvousTimeoutError:
        came = nodes_at_rendezvous(rdzv.endpoint, run_id)
        raise NodesMissing(
            f"rendezvous at {rdzv.endpoint} timed out after train.rdzv_timeout_s="
            f"{rdzv.join_timeout_s} s: {'?' if came is None else came} node(s) came, the job "
            f"needs {rdzv.min_nodes} (start the others with `onceflow train join --endpoint "
            f"{rdzv.endpoint}`)"
        ) from None
    except RendezvousConnectionError as err:
        cause = err.__cause__ or err
        raise OnceflowError(
            f"cannot {'host' if rdzv.first_node else 'reach'} the rendezvous at "
            f"{rdzv.endpoint}: {' '.join(str(cause).split())[:200]}"
        ) from None
    except ChildFailedError as err:
        raise OnceflowError(f"a training rank crashed: {err}") from None
    worst = max(int(c or 0) for c in codes.values())
    if worst:
        failed = OnceflowError(f"a training rank exited with code {worst} (its log is above)")
        failed.exit_code = worst
        raise failed


def nodes_at_rendezvous(endpoint: str, run_id: str) -> int | None:
    """Nodes in the rendezvous of ``run_id`` now, this one included (it has just left it on a
    timeout); None when the store cannot be read."""
    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )

    try:
        host, port = check_rdzv_endpoint(endpoint)
        store = TCPStore(host, port, is_master=False, timeout=timedelta(seconds=5))
        got = C10dRendezvousBackend(store, run_id).get_state()
        state = pickle.loads(got[0]) if got else None  # noqa: S301 - torch's own state record
        others = set(getattr(state, "participants", {})) | set(getattr(state, "wait_list", ()))
    except (RuntimeError, ValueError, TimeoutError, pickle.UnpicklingError, AttributeError):
        return None
    return len(others) + 1
