"""Prefect tasks shared by the flows; each wraps one DVC call or one workspace step.

Retry policy: a failure DVC's stages classify as :class:`~onceflow.orchestration.dvc.Transient`
(object store, network, a stage killed before it finished) is retried with exponential backoff;
bad input (a stage's exit code 2) and a stage's own error never are. The flows themselves do not
retry as a whole: a rerun resumes, DVC restoring what already finished from its run cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.tasks import exponential_backoff

from onceflow.io import write_text_atomic
from onceflow.orchestration import dvc as od
from onceflow.orchestration import story
from onceflow.orchestration.worktree import Workspace, close_workspace, open_workspace

RETRIES = 2
# First retry delay; doubles after each. Tests shorten it through the environment.
BACKOFF_S = float(os.environ.get("ONCEFLOW_RETRY_BACKOFF_S", "10"))


def is_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn
    """Retry only failures classified as transient."""
    return isinstance(state.result(raise_on_failure=False), od.Transient)


RETRY_TRANSIENT = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=BACKOFF_S),
    "retry_condition_fn": is_transient,
}
_retry = RETRY_TRANSIENT


@task(task_run_name="workspace at {rev}")
def open_run_workspace(repo: str, rev: str, overrides: Sequence[str]) -> Workspace:
    """A fresh worktree of ``rev`` sharing the checkout's DVC cache, with ``overrides`` applied
    to its params.yaml (the checkout's params.yaml is never written)."""
    ws = open_workspace(repo, rev, od.cache_dir(repo))
    od.set_params(ws.path, list(overrides))
    log = get_run_logger()
    log.info("workspace %s: commit %s, overrides: %s", ws.path, ws.commit[:12],
             " ".join(overrides) or "none")  # fmt: skip
    return ws


@task(task_run_name="remove workspace")
def close_run_workspace(ws: Workspace) -> None:
    close_workspace(ws)


@task(task_run_name="dvc repro {label}", **_retry)
def dvc_repro(ws: Workspace, targets: Sequence[str], label: str, single_item: bool = False) -> None:
    """``dvc repro [targets]`` in the workspace: DVC decides what runs and in which order."""
    args = ["repro", *(["--single-item", "--pull"] if single_item else []), *targets]
    od.run_dvc(ws.path, args, on_line=get_run_logger().info, project=ws.repo)


@task(task_run_name="dvc status")
def check_complete(ws: Workspace) -> None:
    """``dvc status`` after the run's last ``dvc repro``: every stage up to date with what this
    workspace holds (the pool targets' results restored here), or the run fails naming them."""
    changed = od.dvc_status(ws.path)
    if changed:
        raise od.StageFailed(
            f"after `dvc repro`, `dvc status` still lists {sorted(changed)}: their recorded"
            " results do not match this workspace; rerun, and report it if it persists"
        )
    get_run_logger().info("dvc status: clean (every stage up to date at %s)", ws.commit[:12])


@task(task_run_name="dvc {verb}", **_retry)
def dvc_transfer(ws: Workspace, verb: str, args: Sequence[str] = ()) -> None:
    """``dvc pull``/``dvc push`` (``args``: stage names, ``--run-cache``)."""
    od.run_dvc(ws.path, [verb, *args], on_line=get_run_logger().info, project=ws.repo)


@task(task_run_name="run cache {verb} {stages}", **_retry)
def run_cache(ws: Workspace, verb: str, stages: Sequence[str]) -> None:
    """``push`` a worker's results to the remote's run cache, or ``restore`` them here."""
    od.run_cache(ws.path, verb, list(stages), on_line=get_run_logger().info, project=ws.repo)


def reproduce_and_send_back(
    ws: Workspace, lock: str, inputs: Sequence[str], stages: Sequence[str], label: str
) -> list[str]:
    """On a pool's machine: take the caller's ``dvc.lock`` (the hashes of the inputs), pull
    ``inputs`` from the DVC remote, ``dvc repro`` ``stages`` (restored from the remote's run
    cache when they already ran) and push them with their run-cache entries; the caller then
    restores them through the run cache."""
    if lock:
        write_text_atomic(ws.path / "dvc.lock", lock)
    if inputs:
        dvc_transfer(ws, "pull", list(inputs))
    dvc_repro(ws, list(stages), label=label, single_item=True)
    run_cache(ws, "push", list(stages))
    return list(stages)


@task(task_run_name="tell the run's story")
def tell_story(ws: Workspace, targets: Sequence[str], overrides: Sequence[str]) -> list[dict]:
    """Prefect artifacts: the stages' key metrics, the picks table, the Pareto plots, and the
    run's own dvc.lock (its params and output hashes)."""
    title = f"onceflow run at {ws.commit[:12]}"
    if overrides:
        title += f" with {' '.join(overrides)}"
    create_markdown_artifact(
        key="run-story",
        markdown=story.story_markdown(ws.path, list(targets), title),
        description="Every stage's key metrics for this run",
    )
    rows = [p.row() for p in story.picks(ws.path, list(targets))]
    if rows:
        create_table_artifact(key="picks", table=rows, description="Packaged models per target")
    pareto = story.pareto_markdown(ws.path)
    if pareto:
        create_markdown_artifact(
            key="pareto-fronts",
            markdown=pareto,
            description="Search results: accuracy vs latency per target",
        )
    lock = Path(ws.path, "dvc.lock")
    if lock.is_file():
        create_markdown_artifact(
            key="dvc-lock",
            markdown=f"# dvc.lock of this run\n\n```yaml\n{lock.read_text(encoding='utf-8')}```\n",
            description="What each stage of this run used (params, deps) and produced",
        )
    return rows
