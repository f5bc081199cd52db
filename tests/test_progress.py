"""Progress: a bar on a terminal, periodic log lines (done/total, ETA) elsewhere."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from onceflow import progress
from onceflow.progress import Progress, format_seconds, resolve_mode, status_line, track


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_counts_percent_and_eta() -> None:
    line = status_line("latency timing", 25, 100, "samples", 10.0, 25)
    assert line == "latency timing: 25/100 samples (25%), 10 s elapsed, ETA 30 s"
    # resumed work: the rate counts only what this run did (5 steps in 10 s -> 2 s/step)
    assert status_line("train", 95, 100, "steps", 10.0, 5).endswith("ETA 10 s")
    assert "ETA" not in status_line("x", 100, 100, "it", 3.0, 100)
    assert format_seconds(185) == "3 min 05 s" and format_seconds(3720) == "1 h 02 min"


def test_log_mode_writes_lines_with_done_total_and_a_closing_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.progress")
    items = list(track(range(4), "measuring", unit="subnets", mode="log", interval_s=0.0))
    assert items == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("measuring: 1/4 subnets (25%)") and "ETA" in lines[0]
    assert lines[-2].startswith("measuring: 4/4 subnets (100%)")
    assert lines[-1].startswith("measuring: 4/4 subnets done in")
    assert not any("\r" in line for line in lines)


def test_log_mode_is_silent_for_quick_work(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.progress")
    with Progress(1000, "quick", mode="log", interval_s=3600.0) as bar:
        for _ in range(1000):
            bar.update()
    assert caplog.records == []


def test_postfix_reaches_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="onceflow.progress")
    with Progress(2, "train_supernet", unit="steps", mode="log", interval_s=0.0) as bar:
        bar.set_postfix(loss="1.234", phase="full")
        bar.update()
    assert "(loss=1.234, phase=full)" in caplog.records[0].getMessage()


def test_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delenv("ONCEFLOW_PROGRESS", raising=False)
    assert resolve_mode() == "bar"
    with Progress(3, "package@cpu", unit="models", delay_s=0.0) as bar:
        for _ in range(3):
            bar.update()
    assert "package@cpu" in tty.getvalue() and "3/3" in tty.getvalue()


def test_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", _Tty())
    monkeypatch.setenv("ONCEFLOW_PROGRESS", "log")
    assert resolve_mode() == "log"
    monkeypatch.setenv("ONCEFLOW_PROGRESS", "off")
    assert Progress(5, "x").mode == "off"
    assert Progress(5, "x", enabled=False, mode="bar").mode == "off"
    monkeypatch.setenv("ONCEFLOW_PROGRESS", "sparkles")
    assert resolve_mode() == "bar"  # unknown: warns, falls back to auto
    assert progress.MODES == ("auto", "bar", "log", "off")
