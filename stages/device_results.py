"""Stage device_results@<target>: an imported target's timings (from devices/), or a header,
and the LUT it transfers from an attached target (``--lut-out``), or a record of none.

Every latency_table@<T> depends on its own device_results/<T>.csv: DVC cannot give one target
of a foreach a dependency the others lack, so this cheap stage reads the shared devices/ folder
and passes on only its target's file; a change to another device's timings reruns this stage
(in a second) with an identical output, and nothing downstream.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.devices.stage import Paths, run

OUTPUTS = ("out", "lut_out")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.device_results", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
