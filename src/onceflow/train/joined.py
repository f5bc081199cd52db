"""A rank of a joined node, started by :func:`onceflow.train.nodes.join_job`'s launcher: it
trains in the first node's job and writes nothing. Its own module (above ``pipeline``, which
imports ``nodes``), so ``nodes`` names it without importing back up."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from onceflow.config import load_params
from onceflow.train.pipeline import train_joined_node


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="onceflow train join (rank)")
    ap.add_argument("--params", required=True)
    ap.add_argument("--data", required=True)
    args = ap.parse_args(argv)
    train_joined_node(load_params(args.params), args.data)
