"""A baseline run read from git: a revision (commit, branch, tag) or a DVC experiment's name.

Headline metrics, their ``.details.json`` and ``params.yaml`` are git-tracked (``dvc.yaml``
keeps them ``cache: false`` and ``.gitignore`` leaves them to git), so any commit of the
pipeline, an experiment's commit included, holds what the comparison needs; figures and
artifacts (DVC's cache) are not read. The files are copied out of the commit into a scratch
folder and collected the way the run itself is.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from onceflow.errors import DataError
from onceflow.report.collect import ReportPaths, RunOutputs, collect_run


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
    """Copy ``params.yaml`` and every file under the metrics folder at commit ``sha`` into
    ``dest``; returns how many files were copied."""
    from scmrepo.git import Git

    n = 0
    with Git(os.fspath(root)) as scm:
        fs = scm.get_fs(sha)
        wanted = [paths.params]
        if fs.isdir(paths.metrics):
            wanted += [p for p in fs.find(paths.metrics) if p.endswith(".json")]
        for rel in wanted:
            if not fs.isfile(rel):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(fs.cat_file(rel))
            n += 1
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
