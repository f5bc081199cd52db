"""Deployment definitions for the flows (kept out of the flow modules).

- ``nas-pipeline/weekly``: the whole pipeline on a cron schedule (weekly by default) on a
  process work pool (``cpu``);
- ``nas-target-stages/<pool>``: one per distinct ``latency.targets.<T>.work_pool`` in
  params.yaml (e.g. ``gpu`` for TensorRT targets), run by a worker on that hardware.

Usage (from the project checkout, which is also each worker's working directory)::

    python -m flows.deploy deploy [--pool cpu] [--cron "0 3 * * 1"] [--set KEY=VALUE]
    python -m flows.deploy serve  [--cron "0 3 * * 1"]                # one process, no workers
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from onceflow.orchestration import read_targets, work_pools

WEEKLY = "0 3 * * 1"  # Mondays 03:00 (the server's timezone, UTC by default)
PIPELINE_DEPLOYMENT = "weekly"
PIPELINE_ENTRYPOINT = "flows/nas_pipeline.py:nas_pipeline"
TARGET_ENTRYPOINT = "flows/target_stages.py:nas_target_stages"
ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


def target_pools(params: str | os.PathLike[str]) -> list[str]:
    """The distinct work pools named by the targets in ``params`` (sorted)."""
    return sorted(set(work_pools(read_targets(params)).values()))


def ensure_pools(pools: Sequence[str]) -> None:
    """Create missing work pools as ``process`` pools (a worker started with ``--pool`` would
    create them too; deployments need them to exist)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
                log.info("created process work pool %s", pool)


def deploy(
    source: str | os.PathLike[str] = ROOT,
    pipeline_pool: str = "cpu",
    cron: str = WEEKLY,
    pools: Sequence[str] | None = None,
    pipeline_parameters: Mapping[str, Any] | None = None,
    target_parameters: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, UUID]:
    """Register the deployments with the Prefect API; return full name -> deployment id.

    ``source``: the project checkout the workers run in (its flows/ and dvc.yaml).
    ``pools``: target pools (default: those in ``source``/params.yaml). ``*_parameters``:
    default flow parameters (e.g. ``{"repo": ...}`` when the DVC repo is elsewhere).
    """
    from prefect import flow

    source = str(Path(source).resolve())
    pools = list(pools) if pools is not None else target_pools(Path(source) / "params.yaml")
    ensure_pools([pipeline_pool, *pools])
    ids = {}
    pipeline = flow.from_source(source=source, entrypoint=PIPELINE_ENTRYPOINT)
    ids[f"nas-pipeline/{PIPELINE_DEPLOYMENT}"] = pipeline.deploy(
        name=PIPELINE_DEPLOYMENT,
        work_pool_name=pipeline_pool,
        cron=cron,
        build=False,
        push=False,
        parameters=dict(pipeline_parameters or {}),
        print_next_steps=False,
        description="Reproduce the NAS pipeline (DVC) and publish the models",
    )
    target = flow.from_source(source=source, entrypoint=TARGET_ENTRYPOINT)
    for pool in pools:
        ids[f"nas-target-stages/{pool}"] = target.deploy(
            name=pool,
            work_pool_name=pool,
            build=False,
            push=False,
            print_next_steps=False,
            parameters=dict((target_parameters or {}).get(pool, {})),
            description=f"Run one target's stages on work pool {pool}",
        )
    return ids


def serve(cron: str = WEEKLY, params: str | os.PathLike[str] = "params.yaml") -> None:
    """Serve the pipeline on its schedule, and the target deployments, from this process."""
    from prefect import serve as prefect_serve

    from flows.nas_pipeline import nas_pipeline
    from flows.target_stages import nas_target_stages

    prefect_serve(
        nas_pipeline.to_deployment(name=PIPELINE_DEPLOYMENT, cron=cron),
        *[nas_target_stages.to_deployment(name=p) for p in target_pools(params)],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("deploy", help="register deployments with the Prefect server")
    d.add_argument("--pool", default=os.environ.get("ONCEFLOW_PIPELINE_POOL", "cpu"))
    d.add_argument("--cron", default=os.environ.get("ONCEFLOW_CRON", WEEKLY))
    d.add_argument("--source", default=str(ROOT))
    d.add_argument(
        "--set",
        dest="set_params",
        action="append",
        default=shlex.split(os.environ.get("ONCEFLOW_SET_PARAMS", "")),
        metavar="KEY=VALUE",
        help="default params override of the pipeline deployment (`dvc exp run -S` syntax)",
    )
    s = sub.add_parser("serve", help="serve the deployments from this process")
    s.add_argument("--cron", default=os.environ.get("ONCEFLOW_CRON", WEEKLY))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.cmd == "deploy":
        params = {"set_params": args.set_params} if args.set_params else None
        for name, dep_id in deploy(args.source, args.pool, args.cron, None, params).items():
            print(f"{name}\t{dep_id}")
    else:
        serve(args.cron)


if __name__ == "__main__":
    main()
