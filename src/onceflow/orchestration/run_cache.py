"""Move stage results between machines through the DVC remote's run cache.

``python -m onceflow.orchestration.run_cache push|restore STAGE...``, run in the repo root (DVC's
Python API resolves ``dvc.yaml`` against the working directory).

- ``push`` (on the worker): ``dvc push --run-cache`` of the stages, plus the objects of their
  uncached metrics and plots, which the run cache records but ``dvc push`` leaves behind.
- ``restore`` (where the flow runs): fetch the run cache, check it holds a result for each stage
  with *this* workspace's deps, params and command (else fail: recomputing a hardware-bound
  stage here would give the wrong numbers), then let ``dvc repro`` restore it, so outputs are
  checked out and ``dvc.lock`` is written by DVC.

DVC only run-caches a stage whose uncached files are declared as ``metrics``/``plots``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from onceflow import stage as stage_runner
from onceflow.orchestration.dvc import StageFailed

log = logging.getLogger("onceflow.run_cache")


def restore_here(stages: Sequence[str]) -> None:
    """Restore ``stages`` (names as ``dvc repro`` takes them) in the repo at the cwd."""
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    with Repo() as repo:
        repo.stage_cache.pull(None)  # `dvc fetch --run-cache`
        for name in stages:
            with repo.lock:
                stage = repo.stage.get_target(name)
                try:
                    repo.stage_cache.restore(stage, pull=True)
                except RunCacheNotFoundError:
                    raise StageFailed(
                        f"stage '{name}' ran on a worker but the DVC remote holds no result for"
                        " it with this workspace's code, data and params; make the worker's"
                        " checkout match this one (same commit, same params) and rerun"
                    ) from None
            repo.reproduce(name, single_item=True)  # a run-cache hit now: writes dvc.lock
            log.info("restored %s from the run cache", name)


def push_here(stages: Sequence[str]) -> None:
    """Push ``stages``' outputs and run-cache entries (with uncached files) to the remote."""
    from dvc.repo import Repo

    with Repo() as repo:
        repo.push(targets=list(stages), run_cache=True)
        with repo.lock:
            outs = [o for n in stages for o in repo.stage.get_target(n).outs]
        extra = [o.hash_info for o in outs if not o.use_cache and o.hash_info]
        if extra:
            result = repo.cloud.push(extra)
            if result.failed:
                raise StageFailed(f"could not push {len(result.failed)} run-cache files")
        log.info("pushed %s (+%d uncached files) with run cache", ", ".join(stages), len(extra))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("push", "restore"):
        raise StageFailed("usage: python -m onceflow.orchestration.run_cache push|restore STAGE...")
    (push_here if args[0] == "push" else restore_here)(args[1:])


if __name__ == "__main__":
    sys.exit(stage_runner.run(main))
