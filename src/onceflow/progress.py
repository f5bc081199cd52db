"""Progress for long work: a tqdm bar on a terminal, periodic log lines everywhere else.

On a terminal (stderr is a TTY) a bar appears once the work has run for ``delay_s`` (so quick
work stays silent) and log records are routed through tqdm so they never break the bar. Off a
terminal (Prefect logs, CI, ``dvc repro > file``) the bar would be one endless carriage-return
line, so a log line is written instead every ``interval_s`` seconds: done/total, percent, rate
and ETA, plus a closing line when the work took long enough to have reported at all.

``ONCEFLOW_PROGRESS`` forces a mode: ``bar``, ``log`` or ``off`` (default: ``auto``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("onceflow.progress")

MODES = ("auto", "bar", "log", "off")


def resolve_mode(mode: str | None = None) -> str:
    """``bar``, ``log`` or ``off``: ``mode`` (or $ONCEFLOW_PROGRESS), ``auto`` by stderr's TTY."""
    mode = (mode or os.environ.get("ONCEFLOW_PROGRESS") or "auto").strip().lower()
    if mode not in MODES:
        log.warning("ONCEFLOW_PROGRESS=%r is not one of %s; using auto", mode, MODES)
        mode = "auto"
    if mode == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "bar" if isatty is not None and isatty() else "log"
    return mode


def format_seconds(s: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: short, for ETAs in log lines."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def status_line(desc: str, done: int, total: int, unit: str, elapsed: float, rate_done: int) -> str:
    """``desc: 120/600 samples (20%), 12 s elapsed, ETA 48 s`` (pure, for the log mode).

    ``rate_done`` counts the units done in ``elapsed`` (a resumed run starts past zero)."""
    pct = f" ({100.0 * done / total:.0f}%)" if total else ""
    line = f"{desc}: {done}/{total} {unit}{pct}, {format_seconds(elapsed)} elapsed"
    if rate_done > 0 and done < total:
        line += f", ETA {format_seconds(elapsed / rate_done * (total - done))}"
    return line


class Progress:
    """Counts ``total`` units of work; see the module docstring for what it shows where.

    The interface is tqdm's subset that onceflow uses: ``update(n)``, ``set_postfix(**kw)``,
    ``close()``; also a context manager.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        initial: int = 0,
        enabled: bool = True,
        interval_s: float = 10.0,
        delay_s: float = 2.0,
        mode: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = self.initial = int(initial)
        self.interval_s = interval_s
        self.mode = resolve_mode(mode) if enabled else "off"
        self.log = logger or log
        self.postfix: dict[str, Any] = {}
        self.t0 = self.last = time.monotonic()
        self.reported = False
        self._bar: Any = None
        self._redirect: contextlib.ExitStack | None = None
        if self.mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(
                total=self.total, initial=self.initial, desc=desc, unit=unit, delay=delay_s,
                mininterval=0.5, file=sys.stderr, dynamic_ncols=True,
            )  # fmt: skip
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(logging_redirect_tqdm())

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "log":
            now = time.monotonic()
            if now - self.last >= self.interval_s:
                self.last = now
                self._emit(now)

    def set_postfix(self, refresh: bool = False, **kw: Any) -> None:
        self.postfix = kw
        if self._bar is not None:
            self._bar.set_postfix(refresh=refresh, **kw)

    def _emit(self, now: float) -> None:
        line = status_line(
            self.desc, self.done, self.total, self.unit, now - self.t0, self.done - self.initial
        )
        if self.postfix:
            line += " (" + ", ".join(f"{k}={v}" for k, v in self.postfix.items()) + ")"
        self.reported = True
        self.log.info("%s", line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None
        if self.mode == "log" and self.reported:
            self.log.info(
                "%s: %d/%d %s done in %s",
                self.desc, self.done, self.total, self.unit,
                format_seconds(time.monotonic() - self.t0),
            )  # fmt: skip
            self.reported = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it", **kw: Any
) -> Iterator[T]:
    """Iterate ``items`` while counting them (``total`` defaults to ``len(items)``)."""
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    with Progress(n, desc, unit=unit, **kw) as bar:
        for item in items:
            yield item
            bar.update(1)
