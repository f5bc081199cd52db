"""Work pools and serving; the deployments themselves are declared in ``prefect.yaml``.

    python -m flows.deploy pools [--limit 1]   # check the API; create prefect.yaml's pools
    prefect deploy --all                       # register the deployments of prefect.yaml
    python -m flows.deploy all [--limit 1]     # both, one line on stderr if the API is down
    python -m flows.deploy serve [--cron ...]  # or: one process, no workers, its own names

Every pool gets a concurrency limit (default 1: one flow run at a time per machine, so a latency
table is never measured while another job loads it); runs over the limit wait, queued.
``serve`` registers ``nas-pipeline/served`` and ``nas-target-stages/<pool>-served`` and never
touches the deployments of ``prefect deploy``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from onceflow.orchestration.targets import read_targets, work_pools

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
SERVE_SUFFIX = "-served"
POOL_LIMIT = 1

log = logging.getLogger(__name__)


class NoApi(SystemExit):
    """No reachable Prefect API (exit code 2 with one line on stderr)."""


def declared(path: Path = PREFECT_YAML) -> list[dict]:
    """The deployments prefect.yaml declares."""
    return list((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("deployments") or [])


def declared_pools(path: Path = PREFECT_YAML) -> list[str]:
    """The work pools the declared deployments use (sorted, distinct)."""
    return sorted({d["work_pool"]["name"] for d in declared(path)})


def require_api() -> str:
    """The Prefect API URL, after checking it answers; NoApi with what to do otherwise."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise NoApi(
            "no Prefect API configured: start one (`prefect server start`) and point at it with"
            " `prefect config set PREFECT_API_URL=http://HOST:4200/api` (or export it)"
        )
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as err:
        raise NoApi(
            f"cannot reach the Prefect API at {url} ({type(err).__name__}); start the server"
            " or fix PREFECT_API_URL"
        ) from None
    return url


def ensure_pools(pools: Sequence[str], limit: int = POOL_LIMIT) -> None:
    """Create missing pools as ``process`` pools with ``limit``; set the limit on existing ones."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for pool in pools:
            try:
                client.read_work_pool(pool)
                client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=limit))
            except ObjectNotFound:
                client.create_work_pool(
                    WorkPoolCreate(name=pool, type="process", concurrency_limit=limit)
                )
            log.info("work pool %s: concurrency limit %d", pool, limit)


def served(cron: str, params: Path = ROOT / "params.yaml") -> list:
    """What ``serve`` registers: the pipeline on ``cron`` and a target deployment per pool named
    in ``params``, all under their own names (the pipeline dispatches to the served ones)."""
    from flows.nas_pipeline import nas_pipeline
    from flows.target_stages import nas_target_stages

    pools = sorted(set(work_pools(read_targets(params)).values()))
    pipeline = nas_pipeline.to_deployment(
        name="served", cron=cron, parameters={"target_deployment_suffix": SERVE_SUFFIX}
    )
    return [pipeline, *[nas_target_stages.to_deployment(name=f"{p}{SERVE_SUFFIX}") for p in pools]]


def serve(cron: str, params: Path = ROOT / "params.yaml") -> None:
    """Serve :func:`served` from this process (stopping it pauses only those)."""
    from prefect import serve as prefect_serve

    prefect_serve(*served(cron, params))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, what in (("pools", "create the work pools of prefect.yaml, with limits"),
                      ("all", "pools, then `prefect deploy --all`")):  # fmt: skip
        p = sub.add_parser(cmd, help=what)
        p.add_argument("--limit", type=int, default=POOL_LIMIT, help="flow runs at once per pool")
    s = sub.add_parser("serve", help="serve the flows from this process (own deployment names)")
    s.add_argument("--cron", default=declared()[0]["schedules"][0]["cron"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        url = require_api()
    except NoApi as err:
        print(f"error: {err.code}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.cmd == "serve":
        serve(args.cron)
        return
    ensure_pools(declared_pools(), args.limit)
    print(f"work pools {', '.join(declared_pools())} ready at {url}")
    if args.cmd == "all":
        deploy = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
        raise SystemExit(subprocess.run(deploy, cwd=PREFECT_YAML.parent).returncode)


if __name__ == "__main__":
    main()
