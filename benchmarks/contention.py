"""Loaded-over-idle timings for bench_search.py's ``contention`` section (issue 29).

Each workload runs idle, then while one CPU-bound process per core competes (each in its own
session, as a neighbouring job), alternating for a few rounds in the same invocation; the
figure is median loaded / median idle (an ideal fair share on 2 cores is about 2 for a process
that could use both, 1.5 for one thread). ``reference`` (pure-Python single-thread work, no
pools) is measured the same way: the fair share under the machine's background load. Each
workload also runs as before the fix (pools at ``base.threads`` around the small batches) so
that before and after come from one invocation. The machine is shared: ``load_before`` is the
1-minute load average when the section started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np


@contextlib.contextmanager
def competitors(n: int | None = None) -> Iterator[None]:
    """``n`` (default: one per core) busy-looping processes for the duration of the block,
    each in its own session, as a neighbouring job is: with the kernel's autogroup scheduling
    (``/proc/sys/kernel/sched_autogroup_enabled``) children in this session would share this
    session's CPU share instead of competing as neighbours (one thread measured 3.2x slower
    against two such children on this 2-core machine, pure Python, no pools)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(n or os.cpu_count() or 1)
    ]
    time.sleep(0.3)  # let them get scheduled
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def spin() -> None:
    """The reference: pure-Python single-thread work (no pools), whose loaded/idle is the fair
    share of one thread under this machine's competitors and background load."""
    s = 0
    for i in range(8_000_000):
        s += i * i


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def loaded_over_idle(fn: Callable[[], object], rounds: int = 2) -> dict:
    """Median idle and loaded seconds of ``fn()`` and their ratio."""
    idle, loaded = [], []
    for _ in range(rounds):
        idle.append(_timed(fn))
        with competitors():
            loaded.append(_timed(fn))
    i, lo = float(np.median(idle)), float(np.median(loaded))
    return {
        "idle_s": round(i, 3),
        "loaded_s": round(lo, 3),
        "loaded_over_idle": round(lo / i, 2),
        "idle_by_round": [round(v, 3) for v in idle],
        "loaded_by_round": [round(v, 3) for v in loaded],
    }


@contextlib.contextmanager
def unlimited(*modules: str) -> Iterator[None]:
    """Before the fix: ``limit_threads`` in these modules does nothing (pools stay at the
    process's size)."""
    saved = {m: sys.modules[m].limit_threads for m in modules}
    for m in modules:
        sys.modules[m].limit_threads = lambda n: contextlib.nullcontext()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, f in saved.items():
            sys.modules[m].limit_threads = f  # type: ignore[attr-defined]
