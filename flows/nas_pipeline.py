"""The ``nas-pipeline`` flow: ``dvc repro`` of the pipeline in the run's own workspace.

Each run checks out the requested revision into a fresh git worktree sharing the project's DVC
cache, applies its ``-S`` overrides there (never to the user's checkout) and lets DVC decide what
runs. Targets with a ``work_pool`` run on that pool through the ``nas-target-stages/<pool>``
deployment; their results come back through the DVC remote's run cache. Phases, when some target
has a pool: ``dvc repro`` of what those targets read, the pool runs in parallel with ``dvc repro``
of the local targets, then ``dvc repro`` of the rest. Without pools: one ``dvc repro``. With
``train_pool``, the supernet is trained first on that pool's machine (``nas-train-stage/<pool>``)
and restored here the same way. A pool whose machine is lost fails or retries its run instead of
hanging this one (:mod:`onceflow.orchestration.pools`); the run ends by checking ``dvc status``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.deployments import run_deployment

from flows.tasks import (
    RETRY_TRANSIENT,
    check_complete,
    close_run_workspace,
    dvc_repro,
    dvc_transfer,
    open_run_workspace,
    run_cache,
    tell_story,
)
from flows.train_stage import TRAIN_STAGE
from onceflow.errors import ConfigError
from onceflow.orchestration import dvc as od
from onceflow.orchestration.dvc import StageFailed, Transient
from onceflow.orchestration.pools import ApiUnavailable, Watch, api_unavailable, wait_for_pool_run
from onceflow.orchestration.targets import read_targets, work_pools
from onceflow.orchestration.worktree import Workspace

TARGET_FLOW = "nas-target-stages"  # flows/target_stages.py; one deployment per work pool
TRAIN_FLOW = "nas-train-stage"  # flows/train_stage.py; on the training machine's pool


def target_deployment(pool: str, suffix: str = "") -> str:
    """The deployment that runs a target's stages on work pool ``pool``."""
    return f"{TARGET_FLOW}/{pool}{suffix}"


def train_deployment(pool: str, suffix: str = "") -> str:
    """The deployment that trains the supernet on work pool ``pool``."""
    return f"{TRAIN_FLOW}/{pool}{suffix}"


def check_deployments(pools: dict[str, str], suffix: str, train_pool: str | None = None) -> None:
    """Fail, before any stage runs, if a work pool a target (or the training) needs has no
    deployment, or is the pool this run occupies (its run would wait for this one's slot
    forever)."""
    from prefect.client.orchestration import get_client
    from prefect.context import get_run_context
    from prefect.exceptions import ObjectNotFound

    own = get_run_context().flow_run.work_pool_name
    wanted = [(f"target '{t}'", p, target_deployment(p, suffix)) for t, p in sorted(pools.items())]
    if train_pool:
        wanted.append(("training", train_pool, train_deployment(train_pool, suffix)))
    with get_client(sync_client=True) as client:
        for what, pool, name in wanted:
            if pool == own:
                raise ConfigError(
                    f"{what}: work_pool '{pool}' is the pool this pipeline runs on;"
                    " leave it empty to run it here"
                )
            try:
                client.read_deployment_by_name(name)
            except ObjectNotFound:
                raise ConfigError(
                    f"{what}: work pool '{pool}' has no deployment '{name}'; create it"
                    f" with `prefect deploy --name {name}` (prefect.yaml declares one per pool)"
                ) from None


@task(task_run_name="{what}", **RETRY_TRANSIENT)
def run_on_pool(what: str, deployment: str, pool: str, params: dict, watch: Watch) -> None:
    """Run ``deployment`` on its work pool and wait; a crashed or lost run (worker or machine
    gone) is retried, a failed one is not, and a pool without a live worker fails the run
    instead of hanging it (see :mod:`onceflow.orchestration.pools`)."""
    from prefect.client.orchestration import get_client

    try:
        started = run_deployment(deployment, parameters=params, timeout=0)
    except Exception as err:
        if api_unavailable(err):
            raise ApiUnavailable(f"{what}: could not start its flow run: {err}") from None
        raise
    with get_client(sync_client=True) as client:
        run = wait_for_pool_run(client, started.id, pool, what, watch)
    state = run.state
    if state.is_completed():
        return
    text = f"{what}: flow run '{run.name}' ended {state.name}: {state.message or ''}"
    raise (Transient if state.is_crashed() else StageFailed)(text)


@flow(name="nas-pipeline")
def nas_pipeline(
    repo: str = ".",
    rev: str = "HEAD",
    set_params: list[str] | None = None,
    push: bool = True,
    poll_seconds: float = 5.0,
    target_deployment_suffix: str = "",
    keep_workspace: bool = False,
    worker_lost_after_s: float = 120.0,
    train_pool: str | None = None,
) -> dict:
    """Reproduce the pipeline of ``repo`` at ``rev`` in a workspace of its own.

    ``set_params``: overrides in ``dvc exp run -S`` syntax (``train.epochs=2``), applied in the
    workspace; its dvc.lock records what each stage used. ``push``: ``dvc push --run-cache`` at
    the end when the repo has a default DVC remote. ``target_deployment_suffix``: which
    deployments run pool targets (``""``: those of ``prefect deploy``; ``serve`` sets its own).
    ``worker_lost_after_s``: how long a pool may have no live worker (no heartbeat) before its
    target run counts as lost (retried once) or, never started, fails this run.
    ``train_pool``: train the supernet on that work pool's machine (``nas-train-stage/<pool>``)
    instead of here; its weights come back through the DVC remote's run cache.
    """
    overrides = list(set_params or [])
    ws = open_run_workspace(str(Path(repo).resolve()), rev, overrides)
    try:
        watch = Watch(poll_s=poll_seconds, lost_after_s=worker_lost_after_s)
        return _run(ws, overrides, push, watch, target_deployment_suffix, train_pool)
    finally:
        if not keep_workspace:
            close_run_workspace(ws)


def _run(
    ws: Workspace,
    overrides: list[str],
    push: bool,
    watch: Watch,
    suffix: str,
    train_pool: str | None = None,
) -> dict:
    log = get_run_logger()
    targets = list(read_targets(ws.path / "params.yaml"))
    pools = work_pools(read_targets(ws.path / "params.yaml"))
    remote = od.has_remote(ws.path)
    if pools or train_pool:
        if not remote:
            raise ConfigError(
                f"{'training and ' if train_pool else ''}targets {sorted(pools)} run on work"
                " pools but the repo has no default DVC remote to move their data:"
                " `dvc remote add -d NAME s3://bucket/prefix`"
            )
        check_deployments(pools, suffix, train_pool)
    base = {"commit": ws.commit, "set_params": overrides}
    if train_pool:
        dvc_repro(ws, ["prepare"], label="data for the training machine")
        dvc_transfer(ws, "push", ["prepare"])
        lock = (ws.path / "dvc.lock").read_text(encoding="utf-8")
        deployment = train_deployment(train_pool, suffix)
        log.info("train_supernet -> work pool %s (%s)", train_pool, deployment)
        run_on_pool(f"training on work pool '{train_pool}'", deployment, train_pool,
                    {**base, "lock": lock}, watch)  # fmt: skip
        run_cache(ws, "restore", [TRAIN_STAGE])
    if pools:
        groups = od.target_stages(ws.path, targets)
        inputs = sorted({s for t in pools for s in groups[t].inputs})
        dvc_repro(ws, inputs, label="inputs of pool targets")
        dvc_transfer(ws, "push", inputs)  # the workers pull these
        lock = (ws.path / "dvc.lock").read_text(encoding="utf-8")
        futures = {}
        for t, pool in pools.items():
            deployment = target_deployment(pool, suffix)
            log.info("target %s -> work pool %s (%s)", t, pool, deployment)
            what = f"target '{t}' on work pool '{pool}'"
            futures[t] = run_on_pool.submit(
                what, deployment, pool, {**base, "target": t, "lock": lock}, watch
            )
        local = [s for t in targets if t not in pools for s in groups[t].stages]
        if local:
            dvc_repro(ws, local, label="local targets")
        for t, fut in futures.items():
            fut.result()  # raises the pool run's failure
            run_cache(ws, "restore", list(groups[t].stages))
    dvc_repro(ws, [], label="pipeline")
    check_complete(ws)
    if push and remote:
        dvc_transfer(ws, "push", ["--run-cache"])
    picks = tell_story(ws, targets, overrides)
    return {"commit": ws.commit, "set_params": overrides, "dispatched": pools, "picks": picks}


if __name__ == "__main__":  # run once: python -m flows.nas_pipeline [-S key=value ...]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.nas_pipeline", description=__doc__)
    ap.add_argument("-S", "--set-param", dest="set_params", action="append", default=[])
    ap.add_argument("--repo", default=".")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--no-push", dest="push", action="store_false")
    a = ap.parse_args()
    nas_pipeline(repo=a.repo, rev=a.rev, set_params=a.set_params, push=a.push)
