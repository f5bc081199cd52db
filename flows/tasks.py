"""Prefect tasks shared by the flows: each is one DVC call (serialized by the library's lock).

Only I/O that can fail transiently is retried: ``dvc pull``/``dvc push`` and the stages listed in
:data:`RETRY_STAGES` (publishing to object storage). A failing compute stage fails at once, with
its own output in the task's logs.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from onceflow.orchestration import dvc as od
from onceflow.orchestration.report import models_markdown, pareto_markdown, published_models

RETRY_STAGES = frozenset({"publish"})  # stages whose work is network I/O
IO_RETRIES = 2
IO_RETRY_DELAY_S = 5


@task(task_run_name="dvc repro {stage}")
def repro(root: str, stage: str) -> bool:
    """Run one DVC stage (``dvc repro --single-item``); True if it ran, False if DVC skipped it."""
    return od.repro_stage(root, stage, on_line=get_run_logger().info)


def repro_task(stage: str):  # noqa: ANN201 - a Prefect Task
    """The task for ``stage``: retried only when the stage is network I/O."""
    if stage.partition("@")[0] in RETRY_STAGES:
        return repro.with_options(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S)
    return repro


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, task_run_name="dvc {verb}")
def dvc_transfer(root: str, verb: str, args: Sequence[str] = ()) -> None:
    """``dvc pull``/``dvc push`` (``args``: stage names, ``--run-cache``)."""
    od.run_dvc(root, [verb, *args], on_line=get_run_logger().info)


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, task_run_name="restore {stages}")
def restore(root: str, stages: Sequence[str]) -> None:
    """Bring back a remote target's stages from the DVC remote's run cache (no recompute)."""
    od.restore_from_run_cache(root, list(stages), on_line=get_run_logger().info)


@task(retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, task_run_name="push {stages}")
def push_results(root: str, stages: Sequence[str]) -> None:
    """On a worker: push the stages' outputs and run cache for the flow to restore."""
    od.push_run_results(root, list(stages), on_line=get_run_logger().info)


@task(task_run_name="set params")
def apply_params(root: str, overrides: Sequence[str]) -> None:
    """Write ``dvc exp run -S`` style overrides into params.yaml through DVC's own helper."""
    od.set_params(root, list(overrides))
    if overrides:
        get_run_logger().info("params overrides: %s", " ".join(overrides))


@task(task_run_name="report published models")
def report(root: str) -> list[dict]:
    """Prefect artifacts for people: the published models and each target's Pareto plot."""
    models = published_models(root)
    create_markdown_artifact(
        key="published-models",
        markdown=models_markdown(models),
        description="Models packaged and published by this run",
    )
    if models:
        create_table_artifact(key="published-models-table", table=[m.row() for m in models])
    pareto = pareto_markdown(root)
    if pareto:
        create_markdown_artifact(
            key="pareto-fronts",
            markdown=pareto,
            description="Search results: accuracy vs latency per target",
        )
    return [m.row() for m in models]
