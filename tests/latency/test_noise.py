"""Timings on a noisy machine: two-speed (bimodal) and drifting samples are detected, timed
again, and read through one robust estimator (the faster mode's median)."""

from __future__ import annotations

import time

import numpy as np

from onceflow.config import LatencyTarget
from onceflow.latency.backends.ort import OnnxRuntimeBackend
from onceflow.latency.protocol import LatencyStats, drift, robust_latency, split_modes, unstable
from tests.latency.conftest import make_protocol


def test_two_speeds_are_split_and_the_faster_mode_wins() -> None:
    rng = np.random.default_rng(0)
    fast = rng.normal(1.0, 0.01, 60)
    slow = rng.normal(1.6, 0.02, 40)  # the CPU at its lower clock for a while
    both = np.r_[fast, slow]
    modes = split_modes(both)
    assert modes is not None and len(modes[0]) == 60
    assert robust_latency(both) == np.median(fast)
    st = LatencyStats.from_samples(both)
    assert st.bimodal and st.median == np.median(fast)
    assert LatencyStats.from_json(st.to_json()) == st
    # one speed, a few preempted samples: no split, the plain median
    one = np.r_[rng.normal(1.0, 0.02, 95), [3.0, 4.0, 2.5, 3.3, 5.0]]
    assert split_modes(one) is None and robust_latency(one) == np.median(one)
    assert not LatencyStats.from_samples(one).bimodal


def test_drift_is_the_gap_between_halves_in_time() -> None:
    steady = np.full(40, 2.0)
    assert drift(steady) == 0.0 and not unstable(steady)
    ramp = np.linspace(1.0, 1.5, 40)  # the machine slowing down over the item's samples
    assert drift(ramp) > 0.2 and unstable(ramp)


class TwoSpeed:
    """A real timed item: each run busy-waits ``ms`` (CPU time on this thread), twice as long
    during its first ``slow_runs`` runs -- the two-speed machine, reproduced on purpose."""

    def __init__(self, ms: float, slow_runs: int) -> None:
        self.ms, self.slow_runs, self.runs = ms, slow_runs, 0

    def time(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            per = self.ms * (2.0 if self.runs < self.slow_runs else 1.0)
            end = time.thread_time() + per / 1e3
            while time.thread_time() < end:
                pass
            self.runs += 1
        return time.perf_counter() - t0

    def close(self) -> None:
        pass


def test_unstable_items_are_timed_again_and_recorded() -> None:
    backend = OnnxRuntimeBackend(LatencyTarget())
    protocol = make_protocol(warmup=0, repeats=20, prime=0, clock="thread_cpu")
    steady, switching = TwoSpeed(0.3, 0), TwoSpeed(0.3, 10)  # slow for its first 10 samples
    wall, cpu = backend.sample_sessions([steady, switching], protocol)
    assert switching.runs == 40  # 20 samples, then 20 again
    # the steady item is timed again only when the machine itself was noisy while it ran (a
    # loaded CI VM counts stolen time as thread CPU time); the count records what was retimed
    retimed = 1 + (steady.runs == 40)
    assert backend.noise["unstable"] == backend.noise["retimed"] == retimed
    st = LatencyStats.from_samples(cpu[1])  # the retimed samples: one speed
    assert abs(st.median - 0.3) / 0.3 < 0.15 and not st.bimodal
