"""What every stage module shares: the stage contract (:func:`main`: one way to parse the
arguments, the library's ``<package>/stage.py:run(params, paths)``, one :func:`write_outputs`),
logging set-up and turning user errors into exit codes (:func:`run`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import onceflow
from onceflow.errors import ConfigError, OnceflowError
from onceflow.io import removing_partial

if TYPE_CHECKING:
    from onceflow.config import Params

log = logging.getLogger("onceflow")

# When set (by the Prefect flows), each stage appends JSON lines to this file: a "start" record,
# then its exit code and error if it fails. A start without an end means the process was killed
# (OOM, lost worker): the flow retries that, and never a stage that reported exit code 2.
OUTCOME_ENV = "ONCEFLOW_STAGE_OUTCOME"


def record_outcome(event: str, exit_code: int | None = None, error: str = "") -> None:
    """Append one outcome record for the running DVC stage (a no-op outside the flows)."""
    path = os.environ.get(OUTCOME_ENV)
    if not path:
        return
    rec = {"stage": os.environ.get("DVC_STAGE", ""), "event": event, "exit_code": exit_code}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**rec, "error": error}) + "\n")


@dataclass(frozen=True)
class Invocation:
    """The running stage's command line: its module (``stages.<name>``), its arguments and the
    output paths they name (a launcher of ranks re-runs the module and cleans the outputs)."""

    module: str
    argv: tuple[str, ...]
    outputs: tuple[str, ...]


_CURRENT: list[Invocation] = []


def current() -> Invocation:
    """The stage :func:`main` is running in this process (LookupError outside one)."""
    if not _CURRENT:
        raise LookupError("no stage is running in this process (onceflow.stage.main sets it)")
    return _CURRENT[-1]


class StageOutputs(Protocol):
    """What a stage's library entry ``run(params, paths)`` returns: headline metrics and their
    details (empty for a stage without metrics) and the summary it logs. Optional attributes,
    written by :func:`write_outputs` where the result has them:

    - ``texts``: ``{argument: text}``, files written first (a data gate's report), then
      ``check(args)``, which may raise to leave every other output unwritten;
    - ``save(dir)``: the artifact directory ``--out``;
    - ``plot_png`` / ``plot_csv``: the plot ``--plot`` and its points ``--plot-data``."""

    headline: Mapping[str, Any]
    details: Mapping[str, Any]
    summary: str


P = TypeVar("P")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(
    prog: str,
    doc: str | None,
    run: Callable[[Params, P], StageOutputs | None],
    paths: type[P],
    outputs: Sequence[str],
    argv: Sequence[str] | None,
) -> None:
    """A stage module's whole ``main``, the same for every stage: parse ``--params`` (default
    params.yaml), one option per field of the ``paths`` dataclass (required unless the field
    has a default; a field named ``params`` gets the ``--params`` file), one required option
    per name in ``outputs`` and ``--details`` beside ``--metrics``; load the params (a
    ``target`` must be one of ``latency.targets``); call the library's ``run(params, paths)``
    and write what it returns (:func:`write_outputs`; nothing when it returns None: a rank
    that is not rank 0, or the launcher of the ranks that wrote)."""
    from onceflow.config import load_params
    from onceflow.metrics import details_path

    ap = argparse.ArgumentParser(prog=prog, description=doc)
    ap.add_argument("--params", default="params.yaml", help="the params file (params.yaml)")
    where = [f for f in fields(paths) if f.name != "params"]  # type: ignore[arg-type]
    for f in where:
        if f.default_factory is not MISSING:
            raise TypeError(f"{paths.__name__}.{f.name}: a stage path takes a plain default")
        default = None if f.default is MISSING else f.default
        ap.add_argument(
            _option(f.name), required=f.default is MISSING, default=default,
            help=f.metadata.get("help"),
        )  # fmt: skip
    for name in outputs:
        ap.add_argument(_option(name), required=True)
    if "metrics" in outputs:
        ap.add_argument("--details", help="JSON behind the headline metrics (default: beside it)")
    args = ap.parse_args(argv)
    if "metrics" in outputs:
        args.details = args.details or details_path(args.metrics)
    params = load_params(args.params)
    given = {f.name: getattr(args, f.name) for f in where}
    if any(f.name == "params" for f in fields(paths)):  # type: ignore[arg-type]
        given["params"] = args.params
    if "target" in given and given["target"] not in params.latency.targets:
        known = ", ".join(params.latency.targets)
        raise ConfigError(f"{args.params}: latency.targets has no {given['target']!r} ({known})")
    written = tuple(str(getattr(args, n)) for n in outputs if n != "metrics") + (
        (args.metrics, str(args.details)) if "metrics" in outputs else ()
    )
    invocation = Invocation(prog, tuple(sys.argv[1:] if argv is None else argv), written)
    _CURRENT.append(invocation)
    try:
        result = run(params, paths(**given))
    finally:
        _CURRENT.pop()
    if result is not None:
        write_outputs(result, args, outputs)


def write_outputs(result: StageOutputs, args: argparse.Namespace, outputs: Sequence[str]) -> None:
    """Write a stage's ``outputs`` (argument names) where its arguments say, each atomically:
    the result's texts, then its check; then the artifact directory (``out``, when the result
    saves one), the metrics and details, the plot and its points (``plot``/``plot_data``, when
    the result has them), and if one of those fails, none of them is left; then log the
    summary."""
    from onceflow.io import atomic_dir, write_bytes_atomic, write_text_atomic
    from onceflow.metrics import write_metrics

    texts = getattr(result, "texts", {})
    for name, text in texts.items():
        write_text_atomic(getattr(args, name), text)
    check = getattr(result, "check", None)
    if check is not None:
        check(args)
    names = [*outputs, *(["details"] if "metrics" in outputs else [])]
    rest = [getattr(args, n) for n in names if n not in texts]
    with removing_partial(rest):
        save = getattr(result, "save", None)
        if save is not None:
            with atomic_dir(args.out) as tmp:
                save(tmp)
        if "metrics" in outputs:
            write_metrics(args.metrics, result.headline, result.details, args.details)
        png, csv = getattr(result, "plot_png", None), getattr(result, "plot_csv", None)
        if png is not None:
            write_bytes_atomic(args.plot, png)
        if csv is not None:
            write_text_atomic(args.plot_data, csv)
    log.info("%s", result.summary)


def setup_logging(level: str | None = None) -> None:
    """Configure root logging once, to stderr, at ONCEFLOW_LOG_LEVEL (default INFO)."""
    level = level or os.environ.get("ONCEFLOW_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Libraries that log a lot at INFO.
    for noisy in (
        "great_expectations",
        "great_expectations.data_context.types.base",
        "matplotlib",
        "PIL",
        "botocore",
        "urllib3",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class WrongLibrary(OnceflowError):
    """The stage imported an ``onceflow`` other than the one in its working tree."""

    exit_code = 3


def check_library(tree: str | os.PathLike[str] | None = None) -> None:
    """Refuse to run when ``tree`` (default: the working directory, where DVC runs a stage)
    holds onceflow's sources but the imported library is not those: the outputs would be
    credited to this tree's revision while another revision's code made them."""
    root = Path(tree if tree is not None else os.getcwd()).resolve()
    own = root / "src" / "onceflow" / "__init__.py"
    if not own.is_file():
        return  # a project that uses an installed onceflow: nothing to compare with
    imported = Path(onceflow.__file__).resolve()
    if imported != own.resolve():
        raise WrongLibrary(
            f"{root}: this stage imported onceflow from {imported.parent}, not from this tree's"
            f" {own.parent}; run it with `{root / 'src'}` first on PYTHONPATH (the flows do) or"
            " through `python -m stages.<name>` in this tree"
        )


def _stage_name(main: Callable[..., object]) -> str:
    """The stage a ``stages.<name>`` module's ``main`` runs (``python -m`` names it __main__)."""
    mod = main.__module__
    if mod == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        mod = spec.name if spec is not None else ""
    return mod.rpartition(".")[2]


def check_environment(stage: str, argv: Sequence[str] | None) -> None:
    """The library versions ``stage`` uses are the ones environment.yaml records (when the
    working tree has one); a per-target stage also checks its target's backend library."""
    from onceflow import environment

    if not Path(environment.ENV_FILE).is_file():
        return
    backend = None
    if stage in environment.PER_TARGET:
        ap = argparse.ArgumentParser(add_help=False)
        ap.add_argument("--params", default="params.yaml")
        ap.add_argument("--target")
        args, _ = ap.parse_known_args(sys.argv[1:] if argv is None else argv)
        backend = environment.target_backend(args.params, args.target)
    environment.check_stage(stage, backend)


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main``; a user-facing error becomes one log line and a non-zero exit."""
    setup_logging()
    record_outcome("start")
    try:
        check_library()
        check_environment(_stage_name(main), argv)
        main(argv)
    except OnceflowError as err:
        log.error("%s", err)
        record_outcome("end", err.exit_code, str(err))
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        record_outcome("end", 130, "interrupted")
        return 130
    except BaseException as err:  # a bug: the traceback follows; deterministic, not retried
        record_outcome("end", 1, f"{type(err).__name__}: {err}")
        raise
    return 0
