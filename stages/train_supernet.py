"""DVC stage `train_supernet`: train the elastic supernet, write models/supernet/ and metrics.

Single process: ``python -m stages.train_supernet ...``; data-parallel: ``torchrun
--nproc_per_node=K -m stages.train_supernet ...`` (gloo on CPU, NCCL on GPU). Reruns resume
from ``--checkpoints`` (default: this machine's onceflow cache, outside any workspace, so a
flow run that died resumes in the next one). Only rank 0 writes outputs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from onceflow import stage
from onceflow.train.stage import Paths, run

OUTPUTS = ("out", "metrics")


def main(argv: Sequence[str] | None = None) -> None:
    stage.main("stages.train_supernet", __doc__, run, Paths, OUTPUTS, argv)


if __name__ == "__main__":
    sys.exit(stage.run(main))
