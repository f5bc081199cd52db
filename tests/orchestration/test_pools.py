"""Which workers of a pool are alive, from their heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from onceflow.orchestration.pools import live_workers


def _worker(name: str, seconds_ago: float | None, interval: int | None) -> SimpleNamespace:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    beat = None if seconds_ago is None else now - timedelta(seconds=seconds_ago)
    return SimpleNamespace(name=name, last_heartbeat_time=beat, heartbeat_interval_seconds=interval)


def test_a_worker_is_alive_until_three_heartbeats_are_missed() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    workers = [
        _worker("fresh", 2.0, 1),
        _worker("three-missed", 3.0, 1),  # exactly 3 intervals: still alive
        _worker("four-missed", 3.5, 1),
        _worker("never", None, 1),
        _worker("no-interval", 89.0, None),  # Prefect's 30 s default interval
        _worker("no-interval-gone", 91.0, None),
    ]
    assert live_workers(workers, now) == ["fresh", "three-missed", "no-interval"]
    assert live_workers([], now) == []
