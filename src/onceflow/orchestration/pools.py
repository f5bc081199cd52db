"""Waiting on a flow run in a work pool without hanging when the machine behind it is gone.

``run_deployment`` waits for a final state, and a pool run whose worker died with its machine
never reaches one: the server still says Running. Workers heartbeat to the server; a pool with
no worker that heartbeat within :data:`HEARTBEAT_MULTIPLE` of its interval for ``lost_after_s``
has nobody to run or finish the run. Then a started run is marked Crashed (a transient failure:
the caller retries, on whatever worker is back) and a run nobody picked up is cancelled with a
line naming the pool and how to start a worker (retrying would only wait again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from onceflow.orchestration.dvc import StageFailed, Transient

log = logging.getLogger(__name__)

HEARTBEAT_MULTIPLE = 3  # missed heartbeats before a worker counts as gone (Prefect's own rule)
FALLBACK_HEARTBEAT_S = 30.0  # a worker that did not say its interval


class NoWorker(StageFailed):
    """No live worker in the pool to run the flow run at all."""


class RunLost(Transient):
    """The flow run started, then its pool's workers all went silent (machine lost)."""


class ApiUnavailable(Transient):
    """The Prefect API did not answer (a 5xx or a broken connection): worth retrying."""


API_ERRORS_TOLERATED = 10  # consecutive failed polls before the wait gives up (transient)


def api_unavailable(err: BaseException) -> bool:
    """True for the Prefect API errors that retrying can fix: 5xx answers, broken connections."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(err, PrefectHTTPStatusError):
        return err.response.status_code >= 500
    return isinstance(err, httpx.TransportError)


@dataclass(frozen=True)
class Watch:
    """How to wait: poll every ``poll_s``; give up on a pool without a live worker after
    ``lost_after_s``."""

    poll_s: float
    lost_after_s: float


def live_workers(workers: Sequence[Any], now: datetime | None = None) -> list[str]:
    """Names of the workers whose last heartbeat is recent (within
    :data:`HEARTBEAT_MULTIPLE` heartbeat intervals)."""
    now = now or datetime.now(UTC)
    alive = []
    for w in workers:
        if w.last_heartbeat_time is None:
            continue
        interval = float(w.heartbeat_interval_seconds or FALLBACK_HEARTBEAT_S)
        if (now - w.last_heartbeat_time).total_seconds() <= HEARTBEAT_MULTIPLE * interval:
            alive.append(w.name)
    return alive


def wait_for_pool_run(
    client: Any,
    run_id: UUID,
    pool: str,
    what: str,
    watch: Watch,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """The flow run, once final. Raises :class:`RunLost` (after marking it Crashed) when it
    started and the pool has had no live worker for ``watch.lost_after_s``, and
    :class:`NoWorker` (after cancelling it) when nobody picked it up in that time."""
    from prefect.states import Cancelled, Crashed

    silent_since: float | None = None
    failed_polls = 0
    while True:
        try:
            run = client.read_flow_run(run_id)
            workers = client.read_workers_for_work_pool(pool)
        except Exception as err:
            if not api_unavailable(err):
                raise
            failed_polls += 1
            if failed_polls >= API_ERRORS_TOLERATED:
                raise ApiUnavailable(f"{what}: the Prefect API kept failing: {err}") from None
            log.warning("%s: Prefect API error while waiting (%s); polling on", what, err)
            sleep(watch.poll_s)
            continue
        failed_polls = 0
        if run.state is not None and run.state.is_final():
            return run
        alive = live_workers(workers)
        if alive:
            silent_since = None
        else:
            silent_since = silent_since if silent_since is not None else clock()
            silent = clock() - silent_since
            if silent >= watch.lost_after_s:
                state = run.state
                if state is not None and (state.is_running() or state.is_pending()):
                    msg = (
                        f"{what}: flow run '{run.name}' was {state.name} on work pool"
                        f" '{pool}', whose workers have all been silent for {silent:.0f} s"
                        " (machine or worker lost)"
                    )
                    client.set_flow_run_state(run_id, Crashed(message=msg), force=True)
                    raise RunLost(msg)
                msg = (
                    f"{what}: no live worker on work pool '{pool}' for {silent:.0f} s to run"
                    f" flow run '{run.name}'; start one on the pool's machine:"
                    f" `prefect worker start --pool {pool}`, then rerun"
                )
                client.set_flow_run_state(run_id, Cancelled(message=msg), force=True)
                raise NoWorker(msg)
        sleep(watch.poll_s)
