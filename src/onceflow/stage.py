"""What every stage module shares: logging set-up and turning user errors into exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
