"""DVC, driven from a flow: ``dvc`` commands as subprocesses whose output streams into the
caller's logger, the stage graph from DVC's own index, and ``-S`` overrides through DVC's own
helper. DVC decides what runs and in which order; this module only runs it and says how it failed.

Failures are classified from what the stages themselves record (see
:data:`onceflow.stage.OUTCOME_ENV`), never from DVC's log messages:

- :class:`BadInput`: a stage exited with code 2 (bad params or data). Never retried.
- :class:`Transient`: the object store or network (``dvc push``/``pull``, a stage in
  :data:`IO_STAGES`), or a stage that started and never reported an end (killed: OOM, lost
  worker). Retried with backoff.
- :class:`StageFailed`: anything else (a stage's own error, a bug, DVC refusing to run).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceflow.errors import TRANSIENT_EXIT, ConfigError, OnceflowError
from onceflow.registry.store import PROJECT_ROOT_ENV
from onceflow.stage import OUTCOME_ENV
from onceflow.uri import redact

log = logging.getLogger(__name__)

IO_STAGES = frozenset({"publish"})  # stages whose work is object-store I/O
TRANSFER_VERBS = frozenset({"push", "pull", "fetch", "restore"})  # object-store traffic
_RUN_CACHE = "onceflow.orchestration.run_cache"
_TAIL = 15  # output lines quoted in a failure's message


class StageFailed(OnceflowError):
    """A DVC command or one of its stages failed; the message quotes its last output lines."""


class BadInput(StageFailed):
    """A stage reported bad input (exit code 2): retrying cannot help."""

    exit_code = 2


class Transient(StageFailed):
    """The object store, the network or the machine failed: worth retrying."""


def dvc_env(
    root: str | os.PathLike[str] | None = None, project: Path | None = None
) -> dict[str, str]:
    """Environment for DVC subprocesses in ``root``: analytics off, this interpreter first on
    PATH (stage commands say ``python -m stages.x``), ``root``'s own library first on
    ``PYTHONPATH`` (a workspace of revision X runs X's code, never the checkout's editable
    install), and ``project`` (the user's checkout) as the folder a relative ``file://``
    registry resolves against."""
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    if root is not None:
        tree = Path(root).resolve()
        own = [str(tree / "src"), str(tree)]
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in own]
        env["PYTHONPATH"] = os.pathsep.join(own + rest)
    if project is not None:
        env[PROJECT_ROOT_ENV] = str(Path(project).resolve())
    return env


def classify(verb: str, outcomes: Sequence[dict], what: str) -> StageFailed:
    """The failure of ``dvc <verb>`` given the stages' outcome records (see module doc)."""
    ended = {o["stage"]: o for o in outcomes if o.get("event") == "end"}
    started = [o["stage"] for o in outcomes if o.get("event") == "start"]
    bad = [o for o in ended.values() if o.get("exit_code") == 2]
    if bad:
        return BadInput(f"stage '{bad[0]['stage']}' rejected its input: {bad[0]['error']}")
    unreachable = [o for o in ended.values() if o.get("exit_code") == TRANSIENT_EXIT]
    if unreachable:
        return Transient(f"stage '{unreachable[0]['stage']}': {unreachable[0]['error']}")
    if verb in TRANSFER_VERBS:
        return Transient(what)
    if any(s not in ended for s in started):
        lost = [s for s in started if s not in ended]
        return Transient(f"stage '{lost[0]}' was killed before it finished\n{what}")
    if any(s.partition("@")[0] in IO_STAGES for s in ended):
        return Transient(what)
    return StageFailed(what)


def run_dvc(
    root: str | os.PathLike[str],
    args: Sequence[str],
    on_line: Callable[[str], None] | None = None,
    project: Path | None = None,
) -> None:
    """Run ``dvc <args>`` in ``root``, streaming each output line to ``on_line``; raise a
    classified :class:`StageFailed` (quoting the last lines) on a non-zero exit. ``project``:
    the user's checkout, when ``root`` is a run's workspace (see :func:`dvc_env`)."""
    _run(root, ["dvc", *args], on_line, project)


def run_cache(
    root: str | os.PathLike[str],
    verb: str,
    stages: Sequence[str],
    on_line: Callable[[str], None] | None = None,
    project: Path | None = None,
) -> None:
    """``push`` (on a worker) or ``restore`` (where the flow runs) ``stages`` through the DVC
    remote's run cache (see :mod:`onceflow.orchestration.run_cache`)."""
    _run(root, [_RUN_CACHE, verb, *stages], on_line, project)


def _run(
    root: str | os.PathLike[str],
    module_args: Sequence[str],
    on_line: Callable[[str], None] | None,
    project: Path | None = None,
) -> None:
    emit = on_line or log.info
    args = list(module_args[1:])
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
    with tempfile.TemporaryDirectory(prefix="onceflow-dvc-") as tmp:
        outcome_file = Path(tmp) / "outcomes.jsonl"
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            cwd=os.fspath(root),
            env={**dvc_env(root, project), OUTCOME_ENV: str(outcome_file)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                emit(line)
                tail.append(line)
        rc = proc.wait()
        if rc == 0:
            return
        text = outcome_file.read_text(encoding="utf-8") if outcome_file.exists() else ""
    outcomes = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    if args[0] in TRANSFER_VERBS:  # one line naming the remote: the log holds the rest
        errors = [ln for ln in tail if ln.startswith("ERROR")]
        last = (errors or list(tail) or ["no output"])[-1]
        raise Transient(
            f"`{' '.join(module_args)}` failed (exit {rc}) with {remote_description(root)}:"
            f" {redact(last)}"
        )
    what = f"`{' '.join(module_args)}` failed (exit {rc}) in {root}:\n" + "\n".join(tail)
    raise classify(args[0], outcomes, what)


def set_params(root: str | os.PathLike[str], overrides: Sequence[str]) -> None:
    """Apply ``dvc exp run -S`` style overrides (``section.key=value``, ``file.yaml:key=value``)
    with DVC's own parser and writer: only existing keys (``+key=value`` adds one); comments
    are kept."""
    if not overrides:
        return
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    for path, ovs in to_path_overrides(list(overrides)).items():
        file = Path(root) / path
        if not file.is_file():
            raise ConfigError(f"{file}: params file not found for overrides {ovs}")
        try:
            apply_overrides(file, ovs)
        except InvalidArgumentError as err:
            cause = err.__cause__ or err
            raise ConfigError(f"{path}: cannot apply overrides {ovs}: {cause}") from None


@dataclass(frozen=True)
class TargetStages:
    """A target's stages (DVC's ``<stage>@<target>`` from ``foreach``) in DVC's run order, and
    the stages outside the target whose outputs they read."""

    stages: tuple[str, ...]
    inputs: tuple[str, ...]


def target_stages(root: str | os.PathLike[str], targets: Sequence[str]) -> dict[str, TargetStages]:
    """Each target's stages and inputs, from DVC's stage graph and DVC's repro planner."""
    from dvc.parsing import JOIN
    from dvc.repo import Repo
    from dvc.repo.reproduce import plan_repro

    root = os.path.abspath(root)

    def address(stage: Any) -> str:  # as `dvc repro` run in root names it
        rel = os.path.relpath(stage.path, root)
        return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"

    out = {}
    with Repo(root) as repo:
        graph = repo.index.graph  # edge (stage, stage it depends on)
        for t in targets:
            own = [s for s in graph if getattr(s, "name", "").endswith(f"{JOIN}{t}")]
            plan = plan_repro(graph, own)  # DVC's order, with the ancestors
            inputs = {u for s in own for u in graph.successors(s) if u not in own}
            out[t] = TargetStages(
                stages=tuple(address(s) for s in plan if s in own),
                inputs=tuple(address(s) for s in plan if s in inputs),
            )
    return out


def dvc_status(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``dvc status --json`` in ``root``: stage -> what changed ({} when all is up to date)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=os.fspath(root), env=dvc_env(root), capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise StageFailed(f"`dvc status` failed in {root}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout or "{}")


def has_remote(root: str | os.PathLike[str]) -> bool:
    """True if the repo has a default DVC remote (then the flow pushes at the end)."""
    from dvc.repo import Repo

    with Repo(os.fspath(root)) as repo:
        return bool(repo.config["core"].get("remote"))


def remote_description(root: str | os.PathLike[str]) -> str:
    """The default DVC remote as a user recognizes it: name, URL and endpoint (no secrets)."""
    from dvc.repo import Repo

    try:
        with Repo(os.fspath(root)) as repo:
            name = repo.config["core"].get("remote")
            conf = repo.config["remote"].get(name, {}) if name else {}
    except Exception as err:  # noqa: BLE001 - only describing a failure already being raised
        return f"the DVC remote (config unreadable: {type(err).__name__})"
    if not name:
        return "no default DVC remote"
    where = conf.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint"
    return f"DVC remote '{name}' at {redact(where)} ({redact(conf.get('url', '?'))})"


def cache_dir(root: str | os.PathLike[str]) -> str:
    """The repo's local DVC cache directory (where its run cache lives too)."""
    from dvc.repo import Repo

    with Repo(os.fspath(root)) as repo:
        return str(repo.cache.local_cache_dir)
