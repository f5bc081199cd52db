"""What every stage module shares: one way to parse its arguments (:func:`parse_args`), one way
to write its outputs (:func:`write_outputs`), logging set-up and turning user errors into exit
codes (:func:`run`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import onceflow
from onceflow.errors import OnceflowError

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


def parse_args(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a stage's arguments (``--params``, default ``params.yaml``, and its own flags,
    which include ``--metrics``) plus ``--details``, which defaults to the file next to the
    headline (:func:`onceflow.metrics.details_path`)."""
    from onceflow.metrics import details_path

    ap.add_argument(
        "--details", default=None, help="JSON behind the headline metrics (default: next to it)"
    )
    args = ap.parse_args(argv)
    args.details = args.details or details_path(args.metrics)
    return args


class StageOutputs(Protocol):
    """What a stage's library entry returns: headline metrics and their details, and the
    summary it logs; optionally an artifact directory (``save``) and a plot (PNG + points)."""

    headline: Mapping[str, Any]
    details: Mapping[str, Any]
    summary: str


def write_outputs(result: StageOutputs, args: argparse.Namespace) -> None:
    """Write a stage's outputs where its arguments say, each atomically: the artifact
    directory (``--out``, when the result saves one), the metrics and details, the plot and
    its points (``--plot``/``--plot-data``, when the result has them); then log the summary."""
    from onceflow.io import atomic_dir, write_bytes_atomic, write_text_atomic
    from onceflow.metrics import write_metrics

    save = getattr(result, "save", None)
    if save is not None:
        with atomic_dir(args.out) as tmp:
            save(tmp)
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
