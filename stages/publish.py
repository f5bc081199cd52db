"""DVC stage `publish`: upload every package under artifacts/ to the registry (publish.uri)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.registry.stage import Paths, run

OUTPUTS = ("metrics",)


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.publish", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
