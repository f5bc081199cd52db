"""The ``nas-target-stages`` flow: one target's stages, run on the worker of its hardware pool.

``nas-pipeline`` starts it through ``run_deployment`` with the state of its pipeline: the
``dvc.lock`` it has so far (which, like a ``git pull``, tells this checkout the hashes of the
inputs) and the params overrides it applied. Here: apply the same overrides through DVC, pull the
inputs, ``dvc repro`` the target's stages, push their outputs and run cache. The caller restores
the results from the run cache, so ``dvc.lock`` there is written by DVC, not by this flow.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.tasks import apply_params, dvc_transfer, push_results, repro_task
from onceflow.errors import ConfigError
from onceflow.io import write_text_atomic
from onceflow.orchestration import close_sessions


@flow(name="nas-target-stages")
def nas_target_stages(
    target: str,
    stages: list[str],
    inputs: list[str],
    lock: str = "",
    set_params: list[str] | None = None,
    repo: str = ".",
) -> list[str]:
    """Reproduce ``stages`` (those of ``target``) in the checkout at ``repo``; return those run.

    ``inputs``: upstream stages whose outputs the stages read (pulled from the DVC remote).
    ``lock``: the caller's ``dvc.lock`` text. ``set_params``: the caller's overrides.
    """
    log = get_run_logger()
    root = Path(repo).resolve()
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(
            f"{root}: no dvc.yaml; set the deployment's `repo` parameter or the"
            " worker's working directory to the project checkout"
        )
    bad = [s for s in stages if s.rpartition("@")[2] != target]
    if bad:
        raise ConfigError(f"stages {bad} do not belong to target '{target}'")
    log.info("target %s: stages %s in %s", target, ", ".join(stages), root)
    apply_params(str(root), list(set_params or []))
    if lock:
        write_text_atomic(root / "dvc.lock", lock)
    if inputs:
        dvc_transfer(str(root), "pull", list(inputs))
    try:
        ran = [s for s in stages if repro_task(s)(str(root), s)]
    finally:
        close_sessions()  # the long-lived dvc process of this run
    push_results(str(root), stages)
    return ran
