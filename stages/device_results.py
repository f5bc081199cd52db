"""Stage device_results@<target>: an imported target's timings (from devices/), or a header,
and the LUT it transfers from an attached target (``--lut-out``), or a record of none.

Every latency_table@<T> depends on its own device_results/<T>.csv: DVC cannot give one target
of a foreach a dependency the others lack, so this cheap stage reads the shared devices/ folder
and passes on only its target's file; a change to another device's timings reruns this stage
(in a second) with an identical output, and nothing downstream.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from onceflow import stage
from onceflow.config import load_params
from onceflow.devices import device_results_text, device_transfer_text
from onceflow.io import write_text_atomic


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("params", "target", "devices", "out", "lut-out"):
        ap.add_argument(f"--{name}", required=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    devices = Path(args.devices)
    write_text_atomic(args.out, device_results_text(params, args.target, devices))
    write_text_atomic(args.lut_out, device_transfer_text(params, args.target, devices))


if __name__ == "__main__":
    sys.exit(stage.run(main))
