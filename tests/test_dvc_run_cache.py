"""The flows move results between machines, and reruns restore them, through DVC's run cache.
DVC run-caches a stage only if it has no `persist` outs and every uncached file of it is a
metric or a plot (dvc.stage.cache._can_hash and Stage.run's no_cache_outs): one stray
`cache: false` out silently turns a pool target's restore into a failure. Keep dvc.yaml so."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT

NOT_RUN_CACHED = {"publish", "report"}  # they must run every time (publish: never "restored")


def _stages():  # noqa: ANN202
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        return list(repo.index.stages)


def _why_not_run_cached(stage) -> list[str]:  # noqa: ANN001
    why = [f"{o.def_path}: persist" for o in stage.outs if o.persist]
    why += [
        f"{o.def_path}: cache: false but neither a metric nor a plot"
        for o in stage.outs
        if not o.use_cache and not (o.is_metric or o.is_plot)
    ]
    return why


@pytest.mark.parametrize("stage", _stages(), ids=lambda s: s.addressing)
def test_every_stage_but_publish_is_run_cacheable(stage) -> None:  # noqa: ANN001
    why = _why_not_run_cached(stage)
    if stage.name.partition("@")[0] in NOT_RUN_CACHED:
        assert why, f"{stage.addressing} would be restored from the run cache instead of run"
    else:
        assert not why, f"dvc.yaml stage {stage.addressing} is not run-cacheable: {why}"
