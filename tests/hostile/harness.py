"""The bad-input suite's machinery: a row is (input builder, command, exit code, word).

Each row breaks one input in a fresh workspace, runs the real stage entry (``stages.<name>``
through ``onceflow.stage.run``, as ``python -m`` does) and checks what a user sees: the exit
code, exactly one ERROR line naming the word, no traceback, no secret from the environment
echoed, and no output (nor temp file) written.
A row that expects exit code 0 checks the opposite: the stage recovered, warned with the
word, and wrote its outputs.

Rows run in this process by default (the stage's argv, cwd and environment set for the call,
its log lines and stderr captured as a subprocess's would be, every process-wide setting it may
touch restored); rows marked ``subprocess=True`` (a few per stage), and every row when
``ONCEFLOW_HOSTILE_SUBPROCESS=1``, run ``python -m stages.<name>`` for real, so the exit code and
the absence of a traceback are also seen from outside.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO_ROOT, tool_env

# In every row's environment (as a cloud credential would be): it must never be echoed.
SECRET = "hostileSecret9f3bQ"
SECRET_ENV = {"AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ACCESS_KEY_ID": "AKIAHOSTILE00000"}


@dataclass(frozen=True)
class Row:
    """One bad input. ``build`` breaks the workspace (params dict and files) in place."""

    id: str
    build: Callable[[Workspace], None]
    word: str  # the message must name this (file, key or value)
    code: int = 2
    subprocess: bool = False  # run as `python -m stages.<name>` even when rows run in-process


@dataclass
class Workspace:
    """A throwaway project directory: params (written just before the run) and inputs."""

    root: Path
    params: dict = field(default_factory=dict)
    params_text: str | None = None  # raw text instead of ``params`` (YAML-level breakage)
    params_missing: bool = False  # pass a params path that does not exist

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write_params(self) -> Path:
        import yaml

        p = self.root / "params.yaml"
        if self.params_missing:
            return self.root / "no-such-params.yaml"
        if self.params_text is not None:
            p.write_text(self.params_text, encoding="utf-8", errors="surrogateescape")
        elif not p.exists() or self.params:
            p.write_text(yaml.safe_dump(self.params, sort_keys=False))
        return p


def run_stage(
    ws: Workspace, module: str, args: list[str], *, in_process: bool = True
) -> subprocess.CompletedProcess:
    """``python -m stages.<module> --params <ws>/params.yaml ARGS`` in the workspace: in this
    process unless ``in_process`` is false (or ``ONCEFLOW_HOSTILE_SUBPROCESS=1``)."""
    params = ws.write_params()
    argv = ["--params", str(params), *args]
    if in_process and os.environ.get("ONCEFLOW_HOSTILE_SUBPROCESS") != "1":
        return _run_in_process(ws.root, module, argv)
    env = tool_env(OMP_NUM_THREADS="1", ONCEFLOW_LOG_LEVEL="INFO", **SECRET_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    return subprocess.run(
        [sys.executable, "-m", f"stages.{module}", *argv],
        cwd=ws.root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # onceflow.stage.setup_logging's


def _run_in_process(root: Path, module: str, argv: list[str]) -> subprocess.CompletedProcess:
    """The stage's ``main`` through ``onceflow.stage.run`` as its ``__main__`` calls it; what a
    subprocess would print to stderr (its log lines, argparse's usage, a bug's traceback) is
    returned as ``stderr``."""
    import contextlib
    import importlib
    import io
    import logging
    import traceback

    import numpy as np
    import torch

    from onceflow import stage

    main = importlib.import_module(f"stages.{module}").main
    err, out = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
    root_logger = logging.getLogger()
    saved = (root_logger.level, os.getcwd(), torch.get_num_threads(), np.geterr())
    env = {**SECRET_ENV, "ONCEFLOW_LOG_LEVEL": "INFO"}
    saved_env = {var: os.environ.get(var) for var in env}
    root_logger.addHandler(handler)  # before stage.run: its basicConfig then adds no handler
    root_logger.setLevel(logging.INFO)
    os.environ.update(env)
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = stage.run(main, argv)
            except SystemExit as exit_:  # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except BaseException:  # a bug: the traceback a subprocess would print
                traceback.print_exc(file=err)
                code = 1
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(saved[0])
        os.chdir(saved[1])
        torch.set_num_threads(saved[2])
        np.seterr(**saved[3])
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    return subprocess.CompletedProcess(["stages." + module, *argv], code, out.getvalue(),
                                       err.getvalue())  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


def check(proc: subprocess.CompletedProcess, row: Row, outputs: list[Path], root: Path) -> None:
    """What a user must see for ``row``; ``outputs`` are the stage's outs."""
    err = proc.stderr
    tail = err[-4000:]
    assert proc.returncode == row.code, f"exit {proc.returncode}, want {row.code}:\n{tail}"
    assert "Traceback" not in err, tail
    assert SECRET not in err + proc.stdout, "a secret from the environment was echoed"
    stray = [p for p in root.rglob("*.tmp") if p.name.startswith(".")]
    assert not stray, f"temp files left behind: {stray}"
    if row.code == 0:
        warned = [line for line in err.splitlines() if " WARNING " in line or " INFO " in line]
        assert any(row.word in line for line in warned), f"no line names {row.word!r}:\n{tail}"
        assert all(p.exists() for p in outputs), f"missing outputs:\n{tail}"
        return
    errors = _error_lines(err)
    assert len(errors) == 1, f"want exactly one ERROR line, got {len(errors)}:\n{tail}"
    assert row.word in errors[0], f"{row.word!r} not named in: {errors[0]}"
    written = [p for p in outputs if p.exists()]
    assert not written, f"outputs written despite the error: {written}"
