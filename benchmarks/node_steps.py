"""Sandwich-step time of a data-parallel job laid out as 1 node x 2 ranks vs 2 nodes x 1 rank on
this machine (torch's elastic launcher, c10d rendezvous, gloo on CPU): what bench_supernet's
``two_nodes_over_one`` compares.

Both jobs run at once and take turns step by step (a turn file: job "1x2" steps, then "2x1",
then "1x2" ...), so a busy shared machine slows both alike, as the other benchmarks' interleaved
repeats do. Each rank builds the configured supernet (random init, the same on every rank),
takes its share of one synthetic global batch of ``train.batch_size`` and times its sandwich
steps (the same subnets on every rank, one gradient all-reduce each); rank 0 writes the times.

    python benchmarks/node_steps.py node --nproc 2 --name 1x2 ...       # one node, 2 ranks
    python benchmarks/node_steps.py node --nodes 2 --endpoint H:P --run-id R [--first] ...
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from onceflow.config import load_params
from onceflow.supernet import Supernet
from onceflow.train.distributed import (
    DistContext,
    barrier,
    broadcast_state,
    init_distributed,
    shutdown,
)
from onceflow.train.launch import Rendezvous, launch
from onceflow.train.sandwich import sandwich_step, step_archs
from onceflow.train.schedule import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from configured import configured_space  # noqa: E402

LAYOUTS = ("1x2", "2x1")  # the order of turns


def _wait_turn(turn: Path, mine: str, ctx: DistContext, timeout_s: float = 600) -> None:
    """Rank 0 waits until the turn file names ``mine``; the other ranks wait for rank 0."""
    if ctx.is_main:
        deadline = time.monotonic() + timeout_s
        while not (turn.exists() and turn.read_text() == mine):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{turn}: no turn {mine!r} within {timeout_s} s")
            time.sleep(0.002)
    barrier(ctx)


def _pass_turn(turn: Path, to: str, ctx: DistContext) -> None:
    barrier(ctx)  # every rank has finished its step
    if ctx.is_main:
        tmp = turn.with_suffix(f".{os.getpid()}")
        tmp.write_text(to)
        tmp.replace(turn)


def main(argv: Sequence[str] | None = None) -> None:
    """One rank: time ``--steps`` sandwich steps after ``--warmup``; rank 0 writes ``--out``."""
    ap = argparse.ArgumentParser()
    for name in ("params", "turn", "name", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, required=True)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = params.train
    ctx = init_distributed("cpu", "gloo")
    torch.set_num_threads(args.threads)
    space = configured_space(params)
    torch.manual_seed(0)
    net = Supernet(space)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    broadcast_state(net, ctx)
    opt = make_optimizer(net, 0.01, cfg.momentum, cfg.weight_decay)
    gen = torch.Generator().manual_seed(0)
    side = space.image_size
    x = torch.randn(cfg.batch_size, space.in_channels, side, side, generator=gen)
    y = torch.randint(0, space.n_classes, (cfg.batch_size,), generator=gen)
    x, y = x[ctx.rank :: ctx.world_size], y[ctx.rank :: ctx.world_size]  # this rank's share
    phase = cfg.phases[-1]
    turn, i = Path(args.turn), LAYOUTS.index(args.name)
    times = []
    for g in range(args.warmup + args.steps):
        _wait_turn(turn, f"{args.name} {g}", ctx)
        t = time.perf_counter()
        sandwich_step(net, opt, x, y, step_archs(space, phase, cfg.n_random, 0, g), cfg, ctx)
        times.append(time.perf_counter() - t)
        nxt = LAYOUTS[(i + 1) % len(LAYOUTS)]
        _pass_turn(turn, f"{nxt} {g + 1 if i == len(LAYOUTS) - 1 else g}", ctx)
    if ctx.is_main:
        Path(args.out).write_text(json.dumps({"world": ctx.world_size, "step_s": times}))
    shutdown(ctx)


def node(argv: Sequence[str] | None = None) -> None:
    """This machine's node of a job: ``--nproc`` ranks running :func:`main`."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--endpoint", default="localhost:0")
    ap.add_argument("--run-id", default="")
    ap.add_argument("--first", action="store_true")
    a, worker = ap.parse_known_args(argv)  # the rest goes to each rank's main
    rdzv = Rendezvous(a.endpoint, a.run_id, a.nodes, a.nodes, first_node=a.first or a.nodes == 1,
                      join_timeout_s=300)  # fmt: skip
    launch(a.nproc, "node_steps", worker, rdzv=rdzv)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def median_step_s(params: str, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median sandwich-step seconds of each layout, "1x2" (1 node x 2 ranks) and "2x1" (2
    nodes x 1 rank: two launcher processes meeting at a loopback rendezvous), run together,
    taking turns. Every rank gets base.threads // 2 threads (the stage gives a rank
    base.threads // its machine's ranks; here both layouts share one machine)."""
    threads = max(1, load_params(params).base.threads // 2)
    me = [sys.executable, str(Path(__file__).resolve()), "node"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), ONCEFLOW_LOG_LEVEL="WARNING")
    with tempfile.TemporaryDirectory(prefix="node-steps-") as tmp:
        turn = Path(tmp) / "turn"
        turn.write_text(f"{LAYOUTS[0]} 0")

        def rank_args(name: str) -> list[str]:
            return ["--params", params, "--turn", str(turn), "--name", name, "--steps",
                    str(steps), "--warmup", str(warmup), "--threads", str(threads),
                    "--out", str(Path(tmp) / f"{name}.json")]  # fmt: skip

        two = ["--nodes", "2", "--endpoint", f"127.0.0.1:{_free_port()}",
               "--run-id", uuid.uuid4().hex]  # fmt: skip
        cmds = [
            [*me, "--nproc", "2", *rank_args("1x2")],
            [*me, *two, "--first", *rank_args("2x1")],
            [*me, *two, *rank_args("2x1")],
        ]
        procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in cmds]
        codes = [p.wait(timeout=1200) for p in procs]
        if any(codes):
            raise RuntimeError(f"node-steps jobs failed with exit codes {codes}")
        out = {}
        for name in LAYOUTS:
            times = json.loads((Path(tmp) / f"{name}.json").read_text())["step_s"][warmup:]
            out[name] = statistics.median(times)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["node"]:
        node(sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} node [options] (see the module doc)")
