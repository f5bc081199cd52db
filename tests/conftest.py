"""Shared fixtures: tiny synthetic prepared data, quiet tool environment."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onceflow.config import StageConfig, SupernetConfig
from onceflow.data.prepared import Meta, Split, save_split
from onceflow.supernet import SearchSpace
from tests.support.s3server import BUCKET as S3_BUCKET
from tests.support.s3server import S3Server, seaweed

REPO_ROOT = Path(__file__).resolve().parents[1]

# The session's process-wide settings, fixed for the whole run (so no test sees another's) and
# restored at its end: tools quiet; Prefect's home (read at import) private; flows retry fast; and
# every temp file, ours or a tool's (Prefect workers, torchrun, DVC), in one folder removed at the
# end of a passing session (kept, and named, after a failing one). The timing lock stays the
# machine's own, so xdist workers and other jobs still take turns timing.
SESSION_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "OMP_WAIT_POLICY": "PASSIVE",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
    "ONCEFLOW_RETRY_BACKOFF_S": "0.5",
}
_saved_env: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    import tempfile

    # xdist's loadscope queues modules by their number of tests unless told not to: the order
    # of pytest_collection_modifyitems (the longest modules first) would be lost, and the
    # one-test integration modules, the longest of all, would start last.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False

    from onceflow.hostlock import lock_path

    env = dict(SESSION_ENV)
    env["ONCEFLOW_TIMING_LOCK"] = str(lock_path())
    if "ONCEFLOW_TEST_TMPDIR" not in os.environ:  # xdist workers share their controller's
        _prune_dead_sessions(Path(tempfile.gettempdir()))
        tmp = Path(tempfile.mkdtemp(prefix=_SESSION_PREFIX))
        (tmp / "pid").write_text(str(os.getpid()))
        # At exit, after the cleanups registered later (Prefect's test harness removes its own
        # folder in there at exit too).
        atexit.register(_remove_session_tmp, config, tmp)
        env |= {"ONCEFLOW_TEST_TMPDIR": str(tmp), "TMPDIR": str(tmp)}
    env["PREFECT_HOME"] = tempfile.mkdtemp(
        prefix="prefect-home-", dir=env.get("TMPDIR", os.environ.get("TMPDIR"))
    )
    for var, value in env.items():
        _saved_env[var] = os.environ.get(var)
        os.environ[var] = value
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config: pytest.Config) -> None:
    import tempfile

    for var, value in _saved_env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    tempfile.tempdir = None


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle: keeps its order otherwise
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with slow tests first, the longest first (``slow(seconds=N)`` on the module's
    ``pytestmark`` or on one of its slow tests: the module's test time on CI), a stable sort,
    so that under ``--dist loadscope`` the long modules start at once on both workers and the
    quick ones fill the gaps at the end instead of leaving a long tail. A module's tests keep
    their order."""
    cost: dict[str, float] = {}
    for item in items:
        if marker := item.get_closest_marker("slow"):
            module = _module_of(item)
            cost[module] = max(cost.get(module, 0.0), float(marker.kwargs.get("seconds", 0)))
    items.sort(key=lambda item: (_module_of(item) not in cost, -cost.get(_module_of(item), 0)))


def _module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


_SESSION_PREFIX = "onceflow-tests-"
KEEP_FAILED_SESSIONS = 3


def _prune_dead_sessions(tmp_root: Path) -> None:
    """Remove the folders of sessions whose process is gone (killed, or failed and kept), but
    the newest few, so failed sessions stay readable without filling the disk."""
    import shutil

    dead = []
    for folder in tmp_root.glob(_SESSION_PREFIX + "*"):
        try:
            os.kill(int((folder / "pid").read_text()), 0)
        except (OSError, ValueError):  # no such process, or no readable pid: not running
            dead.append(folder)
    dead.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    for folder in dead[KEEP_FAILED_SESSIONS:]:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_session_tmp(config: pytest.Config, tmp: Path) -> None:
    import shutil
    import sys

    if getattr(config, "_onceflow_failed", False):
        sys.stderr.write(f"onceflow tests: the failed session's temp files are kept in {tmp}\n")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The random order's seed, even under ``-q`` (pytest-randomly's header line is hidden)."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"random order: replay with --randomly-seed={seed}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._onceflow_failed = exitstatus not in (0, 5)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS's ``weed mini`` on 127.0.0.1, signatures checked) for the
    whole session, with the bucket :data:`S3_BUCKET`. Tests take unique prefixes in it."""
    with seaweed(tmp_path_factory.mktemp("seaweedfs")) as server:
        server.create_bucket(S3_BUCKET)
        if os.environ.get("ONCEFLOW_TEST_REPORT_DIR"):  # the figure for a person to read
            Path(os.environ["ONCEFLOW_TEST_REPORT_DIR"], "seaweedfs_startup_s.txt").write_text(
                f"{server.startup_s:.2f}\n"
            )
        yield server


@pytest.fixture(autouse=True)
def process_state_restored() -> Iterator[None]:
    """Whatever a test's code sets process-wide -- torch's and the BLAS pools' threads, the
    environment (a stage entry run in-process sets ``*_NUM_THREADS``, torch's elastic launcher
    its signal list), numpy's float-error mode, the working directory, the root logger's level
    and handlers -- is put back after it (tests/test_process_state.py checks it)."""
    import logging

    import torch
    from threadpoolctl import threadpool_limits

    root = logging.getLogger()
    saved = (torch.get_num_threads(), os.getcwd(), root.level, list(root.handlers))
    saved_env = dict(os.environ)
    with threadpool_limits(limits=None), np.errstate():
        yield
    torch.set_num_threads(saved[0])
    os.chdir(saved[1])
    root.setLevel(saved[2])
    for handler in root.handlers[:]:  # pytest's own capture handlers come and go per phase
        if handler not in saved[3] and type(handler).__module__ != "_pytest.logging":
            root.removeHandler(handler)
    if dict(os.environ) != saved_env:
        os.environ.clear()
        os.environ.update(saved_env)


@pytest.fixture
def one_torch_thread() -> None:
    """One torch thread for the test (a shared 2-core machine); the count is restored after it
    by :func:`process_state_restored`."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def host_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own onceflow host cache (checkpoints, predictor rows, flow workspaces), so
    no test resumes another's work; the variable is restored afterwards."""
    path = tmp_path_factory.mktemp("host-cache")
    monkeypatch.setenv("ONCEFLOW_CACHE_DIR", str(path))
    return path


def synthetic_images(
    n_per_class: int, n_classes: int = 10, size: int = 28, channels: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: each class lights its own patch, plus noise (uint8 NHWC, int64)."""
    rng = np.random.default_rng(seed)
    n = n_per_class * n_classes
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images = rng.integers(0, 60, size=(n, size, size, channels), dtype=np.int64)
    patch = max(2, size // 5)
    for c in range(n_classes):
        r, q = divmod(c, 4)
        y0, x0 = (r * size) // 4 + 1, (q * size) // 4 + 1
        idx = labels == c
        images[idx, y0 : y0 + patch, x0 : x0 + patch, :] += 180
    perm = rng.permutation(n)
    return np.clip(images, 0, 255).astype(np.uint8)[perm], labels[perm].astype(np.int64)


def write_prepared(
    directory: Path, n_per_class: int = 24, n_classes: int = 10, size: int = 28, channels: int = 1
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for i, name in enumerate(("train", "val", "test")):
        k = n_per_class if name == "train" else max(2, n_per_class // 4)
        x, y = synthetic_images(k, n_classes, size, channels, seed=i + 1)
        save_split(directory, name, Split(images=x, labels=y))
        counts[name] = len(y)
    meta = Meta(
        classes=tuple(f"class{c}" for c in range(n_classes)),
        height=size,
        width=size,
        channels=channels,
        mean=(0.2,) * channels,
        std=(0.3,) * channels,
        source="synthetic",
        counts=counts,
    )
    import json

    (directory / "meta.json").write_text(json.dumps(meta.to_json()))
    return directory


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared-data directory (28x28 grayscale, 10 classes, 240/60/60 images)."""
    return write_prepared(tmp_path_factory.mktemp("prepared") / "prepared")


def copy_repo(dest: Path, params_update: dict | None = None) -> Path:
    """Copy the project's source files (tracked + untracked-not-ignored) into ``dest`` as a
    fresh git repo, optionally deep-merging ``params_update`` into its params.yaml."""
    import shutil
    import subprocess

    import yaml

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = REPO_ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    if params_update:
        params_path = dest / "params.yaml"
        params = yaml.safe_load(params_path.read_text()) or {}
        _deep_merge(params, params_update)
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _deep_merge(base: dict, update: dict) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = v


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv's bin first on PATH, analytics off, quiet."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "OMP_WAIT_POLICY": "PASSIVE",
                "ONCEFLOW_LOG_LEVEL": "WARNING"})  # fmt: skip
    env.update(extra)
    return env


def run_dvc(repo: Path, *args: str, check: bool = True, **env: str):
    """Run the dvc CLI in ``repo``; returns the CompletedProcess (text)."""
    import subprocess
    import sys

    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=repo, env=tool_env(**env), capture_output=True, text=True,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def dvc_plot(repo: Path, path: str) -> tuple[str, str, list[dict]]:
    """(x field, y field, data rows) of the plot ``dvc plots show --json`` renders for ``path``."""
    import json

    doc = json.loads(run_dvc(repo, "plots", "show", "--json", path).stdout)
    [plot] = doc["data"][path]
    content = plot["content"]
    enc = content["encoding"]
    return enc["x"]["field"], enc["y"]["field"], content["data"]["values"]


# --- tiny search spaces shared by the latency, predictor and search tests ---
def tiny_supernet_config() -> SupernetConfig:
    return SupernetConfig(
        resolutions=[12, 16],
        kernels=[3, 5],
        expands=[2.0, 3.0],
        depths=[1, 2],
        widths=[0.5, 1.0],
        stem_channels=8,
        head_channels=32,
        stages=[
            StageConfig(channels=8, stride=1),
            StageConfig(channels=16, stride=2, se=True, act="hswish"),
        ],
    )


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace(tiny_supernet_config(), in_channels=1, n_classes=10, image_size=28)


@pytest.fixture(scope="session")
def default_space() -> SearchSpace:
    """The default params' space (bigger; for pure-numpy tests only)."""
    return SearchSpace(SupernetConfig(), in_channels=1, n_classes=10, image_size=28)
