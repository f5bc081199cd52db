"""Library helpers for the Prefect flows: read DVC's stage graph, run DVC one call at a time,
apply params overrides the way ``dvc exp run -S`` does, and build what the flow shows people."""

from onceflow.orchestration.dvc import (
    DVC_LOCK,
    StageFailed,
    close_sessions,
    has_remote,
    lock_text,
    open_session,
    repro_stage,
    restore_from_run_cache,
    run_dvc,
    set_params,
)
from onceflow.orchestration.graph import (
    Plan,
    changed_stages,
    make_plan,
    read_plan,
    read_targets,
    work_pools,
)
from onceflow.orchestration.report import (
    PublishedModel,
    models_markdown,
    pareto_markdown,
    published_models,
)

__all__ = [
    "DVC_LOCK",
    "Plan",
    "PublishedModel",
    "StageFailed",
    "changed_stages",
    "close_sessions",
    "has_remote",
    "lock_text",
    "make_plan",
    "models_markdown",
    "open_session",
    "pareto_markdown",
    "published_models",
    "read_plan",
    "read_targets",
    "repro_stage",
    "restore_from_run_cache",
    "run_dvc",
    "set_params",
    "work_pools",
]
