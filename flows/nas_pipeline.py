"""The ``nas-pipeline`` flow: the DVC pipeline, stage by stage, in DVC's dependency order.

DVC owns the DAG, the cache and the lineage; this flow only decides *where* each stage runs:
global stages (and targets without a ``work_pool``) here, one ``dvc repro --single-item`` at a
time; a target with ``latency.targets.<T>.work_pool`` on that pool, through the
``nas-target-stages/<pool>`` deployment (the worker pulls inputs, reproduces the target's stages,
pushes outputs and run cache; the results come back here from DVC's run cache). Finished stages
are skipped by DVC, so a rerun after a failure continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.deployments import run_deployment

from flows.tasks import apply_params, dvc_transfer, report, repro_task, restore
from onceflow.errors import ConfigError
from onceflow.orchestration import (
    StageFailed,
    changed_stages,
    close_sessions,
    has_remote,
    lock_text,
    open_session,
    read_plan,
    read_targets,
    work_pools,
)

TARGET_FLOW = "nas-target-stages"  # flow of flows/target_stages.py; one deployment per pool


def target_deployment(pool: str) -> str:
    """Name of the deployment that runs a target's stages on work pool ``pool``."""
    return f"{TARGET_FLOW}/{pool}"


@task(task_run_name="target {target} on pool {pool}")
def run_on_pool(
    root: str,
    target: str,
    pool: str,
    stages: list[str],
    inputs: list[str],
    lock: str,
    overrides: list[str],
    poll_seconds: float,
) -> None:
    """Run a target's stages through its pool's deployment and wait; fail with the run's error.

    ``lock``: this workspace's dvc.lock, with which the worker pulls the inputs."""
    params = {
        "target": target,
        "stages": stages,
        "inputs": inputs,
        "lock": lock,
        "set_params": overrides,
    }
    run = run_deployment(target_deployment(pool), parameters=params, poll_interval=poll_seconds)
    state = run.state
    if state is None or not state.is_completed():
        raise StageFailed(
            f"target '{target}' on work pool '{pool}': flow run '{run.name}' ended"
            f" {state.name if state else 'without a state'}: {state.message if state else ''}"
        )


@flow(name="nas-pipeline")
def nas_pipeline(
    repo: str = ".",
    set_params: list[str] | None = None,
    push: bool = True,
    poll_seconds: float = 5.0,
) -> dict:
    """Reproduce the DVC pipeline in ``repo``.

    ``set_params``: overrides with ``dvc exp run -S`` syntax (``train.epochs=2``), written into
    params.yaml by DVC's own helper before anything runs, so dvc.lock records what was used.
    ``push``: ``dvc push`` at the end when the repo has a default DVC remote.
    """
    try:
        return _run_pipeline(str(Path(repo).resolve()), list(set_params or []), push, poll_seconds)
    finally:
        close_sessions()  # the long-lived dvc process of this run


def _run_pipeline(root: str, overrides: list[str], push: bool, poll_seconds: float) -> dict:
    log = get_run_logger()
    open_session(root)  # DVC's start-up overlaps the planning below
    apply_params(root, overrides)
    plan = read_plan(root)
    pools = work_pools(read_targets(Path(root) / "params.yaml"))
    pools = {t: p for t, p in pools.items() if t in plan.targets}
    remote = has_remote(root)
    if pools and not remote:
        raise ConfigError(
            f"{root}: targets {sorted(pools)} have a work_pool but the repo has no"
            " default DVC remote to move their data (`dvc remote add -d ...`)"
        )
    stale = changed_stages(root)  # per `dvc status`; DVC would skip the others
    ran: list[str] = []

    def must_run(stage: str) -> bool:
        return stage in stale or bool(plan.upstream[stage] & set(ran))

    def run_local(stages: tuple[str, ...]) -> None:
        for stage in stages:
            if not must_run(stage):
                log.info("%s: unchanged (dvc status), skipped", stage)
            elif repro_task(stage)(root, stage):
                ran.append(stage)

    run_local(plan.pre)
    dispatch = {t: p for t, p in pools.items() if any(must_run(s) for s in plan.targets[t])}
    futures = {}
    if dispatch:
        inputs = sorted({s for t in dispatch for s in plan.inputs_of(t)})
        dvc_transfer(root, "push", inputs)  # the workers pull these
        lock = lock_text(root)  # read now: local stages below rewrite dvc.lock
        for t, pool in dispatch.items():
            log.info("target %s -> work pool %s (%s)", t, pool, target_deployment(pool))
            futures[t] = run_on_pool.submit(
                root,
                t,
                pool,
                list(plan.targets[t]),
                list(plan.inputs_of(t)),
                lock,
                overrides,
                poll_seconds,
            )
    for t, stages in plan.targets.items():
        if t not in pools:
            run_local(stages)
    for t, fut in futures.items():
        fut.result()  # raises the worker's failure
        restore(root, plan.targets[t])
        ran.extend(plan.targets[t])
    run_local(plan.post)
    if push and remote:
        dvc_transfer(root, "push")
    models = report(root)
    return {"ran": ran, "dispatched": dispatch, "models": models}


if __name__ == "__main__":  # run once, here: python -m flows.nas_pipeline [-S key=value ...]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.nas_pipeline", description=__doc__)
    ap.add_argument("-S", "--set-param", dest="set_params", action="append", default=[])
    ap.add_argument("--repo", default=".")
    ap.add_argument("--no-push", dest="push", action="store_false")
    a = ap.parse_args()
    nas_pipeline(repo=a.repo, set_params=a.set_params, push=a.push)
