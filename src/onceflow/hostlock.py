"""One timer per machine: stages that time hardware hold a host-wide lock, and record the
machine they timed on.

Two latency tables measured at once on one machine are both inflated, and DVC would cache and
reuse them. Concurrency limits on Prefect deployments only cover runs through those
deployments; this lock covers every way a timing stage starts (a deployment, ``serve``, a flow
script, a plain ``dvc repro``) because the stage itself takes it. It is an ``flock`` on one
file per machine (``$ONCEFLOW_TIMING_LOCK``, else ``<tmp>/onceflow-timing.lock``), released by
the kernel when its holder dies, so a killed run never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_ENV = "ONCEFLOW_TIMING_LOCK"
WAIT_LOG_S = 30.0  # how often a waiting stage says who holds the lock


def lock_path() -> Path:
    explicit = os.environ.get(LOCK_ENV)
    return Path(explicit) if explicit else Path(tempfile.gettempdir()) / "onceflow-timing.lock"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        info = json.loads(raw)
        return f"{info['what']} (pid {info['pid']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def timing_lock(what: str, path: Path | None = None) -> Iterator[float]:
    """Hold the machine's timing lock for the block (``what`` names the holder in the lock
    file, for whoever waits). Yields the seconds spent waiting for it."""
    path = path or lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    t0 = time.monotonic()
    try:
        next_log = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - t0
                if waited >= next_log:
                    log.info(
                        "%s: waiting for the timing lock %s, held by %s (%.0f s so far)",
                        what, path, _holder(fd), waited,
                    )  # fmt: skip
                    next_log = waited + WAIT_LOG_S
                time.sleep(0.2)
        waited = time.monotonic() - t0
        stamp = {"what": what, "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(stamp).encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what Python knows)."""
    with contextlib.suppress(OSError):
        for line in (
            Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
        ):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def host_info() -> dict[str, Any]:
    """The machine a measurement ran on: name, CPU model, cores (all and usable) and the
    1-minute load average at this moment."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "load_1m": round(os.getloadavg()[0], 2),
    }


@contextlib.contextmanager
def timed_on_host(what: str) -> Iterator[dict[str, Any]]:
    """:func:`timing_lock` for the block, yielding a record of the host that is filled in as
    it goes: ``host`` (:func:`host_info` without the load), ``load_1m_before``, and on exit
    ``load_1m_after`` and ``lock_wait_s``."""
    with timing_lock(what) as waited:
        before = host_info()
        record: dict[str, Any] = {k: v for k, v in before.items() if k != "load_1m"}
        record["load_1m_before"] = before["load_1m"]
        record["lock_wait_s"] = round(waited, 3)
        yield record
        record["load_1m_after"] = round(os.getloadavg()[0], 2)
