"""Orchestration overhead: the ``nas-pipeline`` flow's wall time over plain ``dvc repro``.

Two fresh copies of the project (git repos, clean DVC cache, same tiny params: ``TINY_PARAMS``),
one run by ``dvc repro``, one by the flow (``push=False``: there is no remote; the flow works in
its own git worktree, as every run does), against a Prefect API started beforehand (as in a
deployment, where the server is already up; its start-up time is reported apart). The flow runs
first, so any warm-disk advantage goes to ``dvc repro``.
Prints one JSON object; ``flow_over_dvc`` is the figure of merit (goal <= 1.15). On a shared
machine absolute times are noisy; the ratio is taken within one run.

    python benchmarks/bench_flow.py [--pipeline real|toy] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-flow-prefect-"))
sys.path.insert(0, str(ROOT))  # `flows` is a top-level package of the checkout

from onceflow.orchestration.dvc import dvc_env  # noqa: E402
from tests.flows.toy import write_toy_repo  # noqa: E402
from tests.support.workspace import TINY_PARAMS, copy_project  # noqa: E402


def make_workspace(kind: str, dest: Path) -> Path:
    if kind == "toy":
        return write_toy_repo(dest, {"ort-cpu": {}, "edge": {}})
    return copy_project(ROOT, dest, TINY_PARAMS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", choices=["real", "toy"], default="real")
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the copies")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-flow-"))
    a = make_workspace(args.pipeline, work / "by-dvc")
    b = make_workspace(args.pipeline, work / "by-flow")
    from dvc.repo import Repo

    with Repo(str(a)) as repo:
        stages = len(repo.index.stages)

    from prefect.testing.utilities import prefect_test_harness

    from flows.nas_pipeline import nas_pipeline

    # Each run its own onceflow cache: the second must not resume the first's checkpoints.
    os.environ["ONCEFLOW_CACHE_DIR"] = str(work / "cache-flow")
    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=90):
        server_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        state = nas_pipeline(repo=str(b), push=False, return_state=True)
        flow_s = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"flow failed: {state.message}")

    t0 = time.perf_counter()
    env = {**dvc_env(a), "ONCEFLOW_CACHE_DIR": str(work / "cache-dvc")}
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=a, env=env,
                          capture_output=True, text=True)  # fmt: skip
    dvc_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    print(json.dumps({
        "flow_over_dvc": round(flow_s / dvc_s, 3),
        "flow_s": round(flow_s, 2),
        "dvc_repro_s": round(dvc_s, 2),
        "overhead_s": round(flow_s - dvc_s, 2),
        "prefect_server_start_s": round(server_s, 2),
        "pipeline": args.pipeline,
        "stages": stages,
        "cpus": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
