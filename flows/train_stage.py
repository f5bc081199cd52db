"""The ``nas-train-stage`` flow: supernet training on a training machine's worker.

``nas-pipeline`` starts it (flow parameter ``train_pool``) with its revision, overrides and
``dvc.lock`` so far, once ``prepare``'s outputs are on the DVC remote. Here, in a workspace of that
revision: pull the prepared data, ``dvc repro train_supernet`` (checkpoints in this machine's
onceflow cache, so a rerun resumes; ``train.nodes`` > 1 makes this the job's first node, other
machines join with ``onceflow train join``), then push the weights and the run-cache entry. The
caller restores them from the run cache, as it does for a pool target's stages.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.tasks import close_run_workspace, open_run_workspace, reproduce_and_send_back

TRAIN_STAGE = "train_supernet"


@flow(name="nas-train-stage")
def nas_train_stage(
    commit: str,
    lock: str = "",
    set_params: list[str] | None = None,
    repo: str = ".",
) -> list[str]:
    """Train the supernet of ``repo`` at ``commit``; return the stages it ran."""
    ws = open_run_workspace(str(Path(repo).resolve()), commit, list(set_params or []))
    try:
        get_run_logger().info("training the supernet of %s here", commit[:12])
        return reproduce_and_send_back(ws, lock, ["prepare"], [TRAIN_STAGE], TRAIN_STAGE)
    finally:
        close_run_workspace(ws)
