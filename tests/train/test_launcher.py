"""The local launcher (train.processes > 1): its ranks never outlive it, and a stop signal ends
the job cleanly (ranks stopped, partial outputs removed, non-zero exit, one line)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from onceflow.io import remove_partial, removing_partial
from tests.conftest import REPO_ROOT, tool_env
from tests.train.test_stage import TINY_PARAMS, _argv

# Long enough that the ranks are still training when the launcher is killed.
LONG_PARAMS = {
    **TINY_PARAMS,
    "train": {**TINY_PARAMS["train"], "processes": 2, "checkpoint_every_steps": 1,
              "phases": [{"name": "all", "epochs": 400, "lr": 0.1}]},
}  # fmt: skip
BOUND_S = 30.0  # ranks must be gone this long after their launcher


def _children(pid: int) -> list[int]:
    """Rank processes (multiprocessing spawn children) of ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(tmp_path: Path, prepared: Path) -> tuple[subprocess.Popen, list[int]]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(LONG_PARAMS))
    env = tool_env(OMP_NUM_THREADS="1", ONCEFLOW_LOG_LEVEL="INFO")
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + str(REPO_ROOT)
    # Output to a file, not a pipe: orphaned ranks would hold a pipe open and block the reader.
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages.train_supernet", *_argv(tmp_path, params, prepared)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True,
        )  # fmt: skip
    deadline = time.monotonic() + 240
    ranks: list[int] = []
    # Wait until both ranks exist and training runs (a checkpoint means a collective ran).
    while time.monotonic() < deadline and proc.poll() is None:
        ranks = _children(proc.pid)
        if len(ranks) == 2 and any((tmp_path / "ckpt").glob("*/ckpt-*.pt")):
            return proc, ranks
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    _assert_gone(ranks)
    raise AssertionError(f"ranks never started training: {_stderr(tmp_path)[-3000:]}")


def _stderr(tmp_path: Path) -> str:
    return (tmp_path / "stderr.txt").read_text()


def _assert_gone(ranks: list[int]) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline and any(_alive(r) for r in ranks):
        time.sleep(0.2)
    survivors = [r for r in ranks if _alive(r)]
    for r in survivors:  # do not leak them into the rest of the test session
        os.kill(r, signal.SIGKILL)
    assert not survivors, f"ranks {survivors} outlived their launcher by {BOUND_S}s"


@pytest.mark.slow(seconds=32)  # about the module's test time on CI
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launcher_sigkill_takes_its_ranks_down(tmp_path: Path, tiny_prepared: Path):
    proc, ranks = _start(tmp_path, tiny_prepared)
    # Freeze rank 1: rank 0 then blocks inside a collective (a C++ futex wait, where Python
    # signal handlers never run); that is the rank that used to hang forever.
    os.kill(ranks[1], signal.SIGSTOP)
    time.sleep(2)
    proc.kill()  # SIGKILL: no handler runs in the launcher
    proc.wait()
    _assert_gone(ranks)
    assert not (tmp_path / "models/supernet").exists()
    assert not (tmp_path / "metrics/supernet.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_launcher_stop_signal_cleans_up(tmp_path: Path, tiny_prepared: Path, sig: signal.Signals):
    proc, ranks = _start(tmp_path, tiny_prepared)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    _assert_gone(ranks)
    err = _stderr(tmp_path)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if " ERROR onceflow: " in line]
    assert len(errors) == 1 and f"training stopped by {sig.name}" in errors[0], err[-3000:]
    assert not (tmp_path / "live").exists()  # created by this run: a partial output
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    assert not list((tmp_path / "ckpt").glob("**/.*.tmp"))
    assert list((tmp_path / "ckpt").glob("*/ckpt-*.pt"))  # complete checkpoints stay to resume


def test_remove_partial_keeps_what_existed_before(tmp_path: Path):
    old, new = tmp_path / "old.json", tmp_path / "live"
    old.write_text("{}")
    new.mkdir()
    (new / "x").write_text("1")
    (tmp_path / ".old.json.abc.tmp").write_text("half")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".ckpt-00000003.pt.xyz.tmp").write_text("half")
    (tmp_path / "ckpt" / "ckpt-00000002.pt").write_text("complete")
    ckpt = tmp_path / "ckpt"
    removed = remove_partial([old, new, ckpt], keep=[old, ckpt])
    assert old.exists() and not new.exists() and (ckpt / "ckpt-00000002.pt").exists()
    assert sorted(p.name for p in removed) == [".ckpt-00000003.pt.xyz.tmp", ".old.json.abc.tmp",
                                               "live"]  # fmt: skip


def test_removing_partial_on_failure_only(tmp_path: Path):
    out = tmp_path / "live"
    with removing_partial([out]):
        out.mkdir()
    assert out.is_dir()  # success keeps it
    out.rmdir()
    with pytest.raises(RuntimeError), removing_partial([out]):
        out.mkdir()
        raise RuntimeError("boom")
    assert not out.exists()
