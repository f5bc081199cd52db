"""DVC stage `package@<target>`: turn the target's selected subnets into verified packages."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.package.stage import Paths, run

OUTPUTS = ("metrics",)


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.package", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
