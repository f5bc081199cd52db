"""The ``nas-target-stages`` flow: one target's stages, on the worker of its hardware pool.

``nas-pipeline`` starts it through ``run_deployment`` with its revision, its overrides and its
``dvc.lock`` so far (which, like a ``git pull``, tells this machine the hashes of the inputs).
Here, in a workspace of its own: pull the inputs, ``dvc repro`` the target's stages (DVC restores
them from the remote's run cache when they already ran), push outputs and run cache. The caller
restores the results from the run cache, so its ``dvc.lock`` is written by DVC.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.tasks import close_run_workspace, open_run_workspace, reproduce_and_send_back
from onceflow.errors import ConfigError
from onceflow.orchestration import dvc as od


@flow(name="nas-target-stages")
def nas_target_stages(
    target: str,
    commit: str,
    lock: str = "",
    set_params: list[str] | None = None,
    repo: str = ".",
) -> list[str]:
    """Reproduce ``target``'s stages of ``repo`` at ``commit``; return the stages."""
    ws = open_run_workspace(str(Path(repo).resolve()), commit, list(set_params or []))
    try:
        group = od.target_stages(ws.path, [target])[target]
        if not group.stages:
            raise ConfigError(f"{ws.path}: dvc.yaml has no stages for target '{target}'")
        get_run_logger().info("target %s: %s", target, ", ".join(group.stages))
        return reproduce_and_send_back(
            ws, lock, group.inputs, group.stages, label=f"target {target}"
        )
    finally:
        close_run_workspace(ws)
