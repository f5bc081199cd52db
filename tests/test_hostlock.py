"""The host-wide timing lock: one timing stage at a time per machine, whoever started it, and a
record of the machine each table was timed on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from onceflow.hostlock import LOCK_ENV, host_info, timed_on_host

_HOLDER = r"""
import logging, sys, time, pathlib
logging.basicConfig(level="INFO")
from onceflow.hostlock import timing_lock
events = pathlib.Path(sys.argv[2])
with timing_lock(sys.argv[1]):
    with events.open("a") as fh: fh.write(f"{sys.argv[1]} in\n")
    release = pathlib.Path(sys.argv[3])
    while not release.exists(): time.sleep(0.05)
    with events.open("a") as fh: fh.write(f"{sys.argv[1]} out\n")
"""


def _holder(name: str, events: Path, release: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, name, str(events), str(release)],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_line(proc: subprocess.Popen, text: str, timeout_s: float = 60) -> str:
    """Read ``proc``'s stderr until a line holds ``text``; returns what was read."""
    import select

    seen, deadline = "", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if text in line:
                return seen
            if not line:
                break
    raise AssertionError(f"no line with {text!r} from the holder; it said:\n{seen}")


def _wait_for(pred, what: str) -> None:  # noqa: ANN001
    for _ in range(600):
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def test_second_timer_waits_for_the_first_and_a_killed_holder_frees_the_lock(
    tmp_path: Path,
) -> None:
    env = {**os.environ, LOCK_ENV: str(tmp_path / "timing.lock"), "ONCEFLOW_LOG_LEVEL": "INFO"}
    events = tmp_path / "events.txt"
    a = _holder("latency_table@a", events, tmp_path / "release-a", env)
    _wait_for(lambda: events.exists() and "latency_table@a in" in events.read_text(), "a holds")
    b = _holder("package@b", events, tmp_path / "release-b", env)
    # b is blocked, not merely slow: it has tried the lock (and said so) and is not "in".
    _wait_for_line(b, "package@b: waiting for the timing lock")
    assert events.read_text().splitlines() == ["latency_table@a in"]
    (tmp_path / "release-a").touch()
    (tmp_path / "release-b").touch()
    assert a.wait(60) == 0 and b.wait(60) == 0
    assert events.read_text().splitlines() == [
        "latency_table@a in", "latency_table@a out", "package@b in", "package@b out",
    ]  # fmt: skip

    # A holder killed mid-timing leaves nothing held: the kernel drops an flock with its process.
    events.unlink()
    c = _holder("latency_table@c", events, tmp_path / "never", env)
    _wait_for(lambda: events.exists(), "c holds")
    c.send_signal(signal.SIGKILL)
    c.wait(30)
    d = _holder("latency_table@d", events, tmp_path / "release-b", env)
    assert d.wait(60) == 0
    assert events.read_text().splitlines()[-2:] == ["latency_table@d in", "latency_table@d out"]


def test_a_waiting_stage_names_the_holder(tmp_path: Path) -> None:
    env = {**os.environ, LOCK_ENV: str(tmp_path / "timing.lock")}
    events = tmp_path / "events.txt"
    a = _holder("latency_table@a", events, tmp_path / "release", env)
    _wait_for(lambda: events.exists(), "a holds")
    b = _holder("package@b", events, tmp_path / "release", env)
    err = _wait_for_line(b, "waiting for the timing lock")  # b has tried the lock: a holds it
    (tmp_path / "release").touch()
    a.wait(60)
    err += b.communicate(timeout=60)[1]
    assert f"package@b: waiting for the timing lock {tmp_path / 'timing.lock'}" in err
    assert f"held by latency_table@a (pid {a.pid}" in err


def test_timed_on_host_records_the_machine_and_its_load(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "timing.lock"))
    with timed_on_host("latency_table@x") as host:
        assert "load_1m_after" not in host
    info = host_info()
    assert host["hostname"] == info["hostname"] and host["cpu_model"] == info["cpu_model"]
    assert host["cores"] == os.cpu_count() and host["usable_cores"] == len(os.sched_getaffinity(0))
    assert {"load_1m_before", "load_1m_after", "lock_wait_s"} <= set(host)
    assert host["cpu_model"] and host["cpu_model"] != "unknown"
