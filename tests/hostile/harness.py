"""The bad-input suite's machinery: a row is (input builder, command, exit code, word).

Each row breaks one input in a fresh workspace, runs the real stage command in a subprocess
and checks what a user sees: the exit code, exactly one ERROR line naming the word, no
traceback, no secret from the environment echoed, and no output (nor temp file) written.
A row that expects exit code 0 checks the opposite: the stage recovered, warned with the
word, and wrote its outputs.
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


def run_stage(ws: Workspace, module: str, args: list[str]) -> subprocess.CompletedProcess:
    """``python -m stages.<module> --params <ws>/params.yaml ARGS`` in the workspace."""
    params = ws.write_params()
    env = tool_env(OMP_NUM_THREADS="1", ONCEFLOW_LOG_LEVEL="INFO", **SECRET_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    return subprocess.run(
        [sys.executable, "-m", f"stages.{module}", "--params", str(params), *args],
        cwd=ws.root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


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
