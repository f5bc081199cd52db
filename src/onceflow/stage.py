"""What every stage module shares: logging set-up and turning user errors into exit codes."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from onceflow.errors import OnceflowError

log = logging.getLogger("onceflow")


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


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage's ``main``; a user-facing error becomes one log line and a non-zero exit."""
    setup_logging()
    try:
        main(argv)
    except OnceflowError as err:
        log.error("%s", err)
        return err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 0
