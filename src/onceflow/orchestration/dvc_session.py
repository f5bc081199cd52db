"""A long-lived ``dvc`` CLI process that runs commands one after another.

Starting ``python -m dvc`` costs about a second of imports per command; a flow issues one
``dvc repro --single-item`` per stage. This process pays that once: it reads one JSON request per
line on stdin (``{"args": [...], "env": {...}}``), runs DVC's own CLI entry point
(``dvc.cli.main``, which builds a fresh ``Repo`` per command, as the ``dvc`` executable does)
with the request's environment (so stage commands see the caller's current environment), and
after the command's output writes one line ``<SENTINEL> <exit code>``. Stage commands inherit
its stdout, so their output streams to the caller in order.

    python -m onceflow.orchestration.dvc_session      # run in the repo root
"""

from __future__ import annotations

import json
import os
import sys

SENTINEL = "\x1eonceflow-dvc-exit"


def serve() -> None:
    from dvc.cli import main  # importing dvc sets up its console logging, as for `dvc`

    for line in sys.stdin:
        request = json.loads(line)
        os.environ.clear()
        os.environ.update(request["env"])
        try:
            rc = main(request["args"])
        except SystemExit as exc:  # argparse --help / usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        print(f"{SENTINEL} {rc}", flush=True)


if __name__ == "__main__":
    serve()
