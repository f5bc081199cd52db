"""A baseline run read from git: a revision (commit, branch, tag) or a DVC experiment's name.

Headline metrics, their ``.details.json`` and ``params.yaml`` are git-tracked (in commits made
before the details were, they are recorded by hash in ``dvc.lock``, content in DVC's cache),
so any commit of
the pipeline, an experiment's commit included, holds what the comparison needs; figures and
artifacts are not read. The files are copied out of the commit through DVC's file system into
a scratch folder and collected the way the run itself is.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from onceflow.errors import DataError
from onceflow.report.collect import ReportPaths, RunOutputs, collect_run

log = logging.getLogger(__name__)


def resolve_revision(root: str | os.PathLike[str], rev: str) -> str:
    """The commit sha of ``rev``: anything git resolves, or an experiment name (``dvc exp
    show`` lists them). A bad name is a :class:`DataError` naming it."""
    from dvc.exceptions import DvcException
    from dvc.scm import SCMError, resolve_rev
    from scmrepo.git import Git

    try:
        scm = Git(os.fspath(root))
    except Exception as err:  # scmrepo raises a bare SCMError subclass per backend
        raise DataError(f"{root}: not a git repository ({err}); --baseline needs one") from None
    try:
        return resolve_rev(scm, rev)
    except (DvcException, SCMError) as err:
        raise DataError(
            f"--baseline {rev}: not a git revision or experiment name in {root} ({err}); "
            "see `git log` or `dvc exp show`"
        ) from None
    finally:
        scm.close()


def export_metrics(root: str | os.PathLike[str], sha: str, dest: Path, paths: ReportPaths) -> int:
    """Copy ``params.yaml`` and every JSON under the metrics folder at commit ``sha`` into
    ``dest``, through DVC's file system: git-tracked files from the commit, DVC-cached ones
    from the cache (by the hash in that commit's ``dvc.lock``; one missing from the cache is
    skipped with a warning). Returns how many files were copied."""
    from dvc.api import DVCFileSystem

    n = 0
    fs = DVCFileSystem(os.fspath(root), rev=sha)
    try:
        wanted = [paths.params]
        if fs.isdir(paths.metrics):
            wanted += [p for p in fs.find(paths.metrics) if p.endswith(".json")]
        for rel in wanted:
            rel = rel.lstrip("/")
            try:
                data = fs.cat_file(rel)
            except (OSError, ValueError) as err:  # not in the local cache (dvc pull fetches it)
                log.warning("baseline %s: %s unreadable (%s); left out", sha[:10], rel, err)
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            n += 1
    finally:
        fs.close()
    return n


def collect_baseline(
    root: str | os.PathLike[str], rev: str, paths: ReportPaths | None = None
) -> RunOutputs:
    """The run recorded at ``rev`` (a git revision or experiment name) in the repo at ``root``."""
    p = paths or ReportPaths()
    sha = resolve_revision(root, rev)
    with tempfile.TemporaryDirectory(prefix="onceflow-baseline-") as tmp:
        export_metrics(root, sha, Path(tmp), p)
        run = collect_run(tmp, ReportPaths(params=p.params, metrics=p.metrics))
    run.root = f"{rev}"
    run.git = {"commit": sha, "dirty": False}
    return run
