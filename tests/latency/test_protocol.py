from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from onceflow.config import LatencyConfig, LatencyTarget, MeasureProtocolConfig
from onceflow.latency.protocol import (
    LatencyStats,
    measure_interleaved,
    sample_interleaved_clocks,
)
from onceflow.latency.table import protocol_from_config
from tests.latency.conftest import make_protocol


class StepClock:
    """A Timed item whose n runs take n * cost seconds; records the global call order."""

    def __init__(self, name: str, cost: float, log: list[tuple[str, int]]):
        self.name, self.cost, self.log = name, cost, log

    def time(self, n: int) -> float:
        self.log.append((self.name, n))
        return n * self.cost

    def close(self) -> None:
        pass


def test_stats_from_samples() -> None:
    s = LatencyStats.from_samples(np.arange(1.0, 101.0))
    assert s.n == 100
    assert s.median == pytest.approx(50.5)
    assert s.p10 < s.median < s.p90
    assert s.cv == pytest.approx((s.p90 - s.p10) / 2.5631 / s.median, rel=1e-3)
    assert LatencyStats.from_json(s.to_json()) == s


def test_stats_rejects_empty() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        LatencyStats.from_samples([])


def test_protocol_validates() -> None:
    with pytest.raises(ValueError, match="repeats"):
        replace(make_protocol(), repeats=0)


def test_interleaved_rounds_visit_every_item_and_report_per_inference_ms() -> None:
    log: list[tuple[str, int]] = []
    items = [StepClock("a", 1e-3, log), StepClock("b", 3e-3, log), StepClock("c", 2e-3, log)]
    proto = make_protocol(warmup=4, repeats=6, number=5, interleave=True, prime=0, seed=1)
    stats = measure_interleaved(items, proto)
    assert [round(s.median, 9) for s in stats] == [1.0, 3.0, 2.0]
    assert all(s.n == 6 for s in stats)
    assert log[:3] == [("a", 4), ("b", 4), ("c", 4)]  # warm-up first
    timed = [name for name, _ in log[3:]]
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # each round covers every item
    assert len({tuple(r) for r in rounds}) > 1  # in shuffled order


def test_sequential_mode_times_item_by_item() -> None:
    log: list[tuple[str, int]] = []
    items = [StepClock("a", 1e-3, log), StepClock("b", 1e-3, log)]
    proto = make_protocol(warmup=0, repeats=3, number=1, interleave=False, prime=0)
    measure_interleaved(items, proto)
    assert [n for n, _ in log] == ["a"] * 3 + ["b"] * 3


def test_every_sample_is_primed_right_before_it_and_priming_is_not_timed() -> None:
    log: list[tuple[str, int]] = []
    items = [StepClock("a", 1e-3, log), StepClock("b", 2e-3, log)]
    stats = measure_interleaved(items, make_protocol(warmup=0, repeats=4, number=3, prime=2))
    assert [round(s.median, 9) for s in stats] == [1.0, 2.0]  # per inference of the timed runs
    assert len(log) == 2 * 4 * 2
    pairs = [log[i : i + 2] for i in range(0, len(log), 2)]
    assert all(p[0] == (p[1][0], 2) and p[1][1] == 3 for p in pairs)  # prime, then the sample


def test_default_protocol_primes() -> None:
    default = protocol_from_config(LatencyConfig(), LatencyTarget(), 0)
    assert default.prime == MeasureProtocolConfig().prime >= 2
    assert default.repeats == MeasureProtocolConfig().repeats  # no second set of defaults


class Sleeper:
    """Waits without using CPU: wall time passes, this thread's CPU time barely does."""

    def time(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            time.sleep(0.002)
        return time.perf_counter() - t0

    def close(self) -> None:
        pass


def test_thread_cpu_clock_ignores_time_not_spent_computing() -> None:
    proto = make_protocol(warmup=0, repeats=3, number=1)
    wall, cpu = sample_interleaved_clocks([Sleeper()], proto)
    assert np.all(wall >= 2.0)
    assert np.all(cpu < wall / 2)
    cpu_stats = measure_interleaved([Sleeper()], replace(proto, clock="thread_cpu"))[0]
    assert cpu_stats.median < 1.0


def test_clock_auto_resolves_per_target() -> None:
    cfg = LatencyConfig()
    one = LatencyTarget(threads=1)
    two = LatencyTarget(threads=2)
    assert protocol_from_config(cfg, one, 0).clock == "thread_cpu"
    assert protocol_from_config(cfg, two, 0).clock == "wall"
    with pytest.raises(ValidationError, match="thread_cpu only"):
        LatencyConfig(targets={"x": two}, protocol=MeasureProtocolConfig(clock="thread_cpu"))
    with pytest.raises(ValueError, match="clock"):
        replace(make_protocol(), clock="sundial")


# The interleaved/alone latency ratio under the default protocol (priming) is a speed
# comparison: benchmarks/bench_protocol.py measures it. Priming itself is tested above by
# construction (test_every_sample_is_primed_right_before_it_and_priming_is_not_timed).
