"""One DVC call at a time, from a flow: stage runs, params overrides, pull/push, run-cache restore.

Two DVC calls on one workspace collide on the repo lock (two processes) or race on ``dvc.lock``
(two threads), so every call here holds :data:`DVC_LOCK`. Stages run through DVC's CLI in a
long-lived child process (:mod:`onceflow.orchestration.dvc_session`) so their own output (and
error message) streams, line by line, into the caller's logger, i.e. into the Prefect run logs;
reading the graph, the status and the config uses DVC's Python API in-process.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from onceflow.errors import ConfigError, OnceflowError
from onceflow.orchestration.dvc_session import SENTINEL

log = logging.getLogger(__name__)

DVC_LOCK = threading.Lock()  # serializes every DVC call made by this process
_TAIL = 15  # output lines kept for the error message of a failed call
_RUN_CACHE = "onceflow.orchestration.run_cache"


class StageFailed(OnceflowError):
    """A DVC stage (or another DVC command) exited non-zero; the message holds its last lines."""


def dvc_env() -> dict[str, str]:
    """Environment for DVC subprocesses: analytics off, this interpreter first on PATH."""
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    # Stage commands say `python -m stages.x`: make that the interpreter running this flow.
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _stream(
    root: str | os.PathLike[str], cmd: Sequence[str], on_line: Callable[[str], None] | None
) -> list[str]:
    """Run ``cmd`` in ``root`` holding DVC_LOCK; stream its output lines; StageFailed if rc != 0."""
    emit = on_line or log.info
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    with DVC_LOCK:
        proc = subprocess.Popen(
            cmd,
            cwd=os.fspath(root),
            env=dvc_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if line.strip():
                emit(line)
                lines.append(line)
                tail.append(line)
        rc = proc.wait()
    if rc != 0:
        what = " ".join(cmd[2:])
        raise StageFailed(f"`{what}` failed (exit {rc}) in {root}:\n" + "\n".join(tail))
    return lines


class _Session:
    """Client of one :mod:`onceflow.orchestration.dvc_session` process (per repo root)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onceflow.orchestration.dvc_session"],
            cwd=root,
            env=dvc_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, args: Sequence[str], emit: Callable[[str], None]) -> tuple[int, list[str]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"args": list(args), "env": dvc_env()}) + "\n")
        self.proc.stdin.flush()
        lines: list[str] = []
        for raw in self.proc.stdout:
            if raw.startswith(SENTINEL):
                return int(raw.split()[1]), lines
            line = raw.rstrip("\n")
            if line.strip():
                emit(line)
                lines.append(line)
        return -1, lines + [f"the dvc process ended unexpectedly (exit {self.proc.wait()})"]

    def close(self) -> None:
        if self.alive():
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_SESSIONS: dict[str, _Session] = {}


def close_sessions() -> None:
    """End the long-lived dvc processes this process started (also done at exit)."""
    with DVC_LOCK:
        while _SESSIONS:
            _SESSIONS.popitem()[1].close()


atexit.register(close_sessions)


def open_session(root: str | os.PathLike[str]) -> None:
    """Start the repo's long-lived dvc process now, so its start-up overlaps other work."""
    key = os.path.abspath(root)
    with DVC_LOCK:
        if key not in _SESSIONS or not _SESSIONS[key].alive():
            _SESSIONS[key] = _Session(key)


def run_dvc(
    root: str | os.PathLike[str], args: Sequence[str], on_line: Callable[[str], None] | None = None
) -> list[str]:
    """Run ``dvc <args>`` in ``root``; stream each output line to ``on_line``; return the lines.

    Commands go to a long-lived dvc process per repo (DVC's own CLI entry point, without the
    start-up cost per command). Raises StageFailed naming the command and quoting its last
    output lines on a non-zero exit.
    """
    key = os.path.abspath(root)
    with DVC_LOCK:
        session = _SESSIONS.get(key)
        if session is None or not session.alive():
            session = _SESSIONS[key] = _Session(key)
        rc, lines = session.run(args, on_line or log.info)
        if rc < 0:
            _SESSIONS.pop(key, None)
    if rc != 0:
        tail = "\n".join(lines[-_TAIL:])
        raise StageFailed(f"`dvc {' '.join(args)}` failed (exit {rc}) in {root}:\n{tail}")
    return lines


def repro_stage(
    root: str | os.PathLike[str], stage: str, on_line: Callable[[str], None] | None = None
) -> bool:
    """``dvc repro --single-item <stage>``; True if the stage ran (or was restored), False if
    DVC skipped it as unchanged."""
    lines = run_dvc(root, ["repro", "--single-item", stage], on_line)
    return not any(f"Stage '{stage}' didn't change" in ln for ln in lines)


def set_params(root: str | os.PathLike[str], overrides: Sequence[str]) -> None:
    """Apply ``dvc exp run -S`` style overrides (``section.key=value``, ``file.yaml:key=value``).

    Uses DVC's own parser and writer (the code path of ``dvc exp run --set-param``), so only
    existing keys can be set (``+key=value`` adds one) and the file keeps its comments.
    """
    if not overrides:
        return
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    with DVC_LOCK:
        for path, ovs in to_path_overrides(overrides).items():
            file = Path(root) / path
            if not file.is_file():
                raise ConfigError(f"{file}: params file not found for overrides {ovs}")
            try:
                apply_overrides(file, ovs)
            except InvalidArgumentError as err:
                cause = err.__cause__ or err
                raise ConfigError(f"{file}: cannot apply overrides {ovs}: {cause}") from None
    log.info("params overrides applied: %s", " ".join(overrides))


def has_remote(root: str | os.PathLike[str]) -> bool:
    """True if the repo has a default DVC remote (then the flow pushes at the end)."""
    from dvc.repo import Repo

    with DVC_LOCK, Repo(os.fspath(root)) as repo:
        return bool(repo.config["core"].get("remote"))


def restore_from_run_cache(
    root: str | os.PathLike[str],
    stages: Sequence[str],
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Bring back stages that ran elsewhere from the DVC remote's run cache; never recompute them
    here (see :mod:`onceflow.orchestration.run_cache`; run in ``root`` as DVC's API expects)."""
    _stream(root, [sys.executable, "-m", _RUN_CACHE, "restore", *stages], on_line)


def push_run_results(
    root: str | os.PathLike[str],
    stages: Sequence[str],
    on_line: Callable[[str], None] | None = None,
) -> None:
    """On a worker: push ``stages``' outputs and run cache so the flow can restore them."""
    _stream(root, [sys.executable, "-m", _RUN_CACHE, "push", *stages], on_line)


def lock_text(root: str | os.PathLike[str]) -> str:
    """The workspace's ``dvc.lock`` (what a worker needs to pull this run's inputs)."""
    path = Path(root) / "dvc.lock"
    return path.read_text(encoding="utf-8") if path.exists() else ""
