"""Benchmark the supernet on this machine; prints one JSON object.

- dynamic_over_static: median over archs of (train-step time of the supernet with arch A
  active) / (train-step time of extract(A)); same batch, same process, interleaved repeats.
  A train step is forward + cross-entropy + backward + SGD step.
- sandwich_images_per_s: training throughput of full sandwich steps (max + min + n_random);
  fast_depthwise_speedup: the same steps with torch's own depthwise weight gradient, timed
  interleaved, over these (supernet/dwconv.py).
- two_nodes_over_one: median sandwich-step time of 2 nodes x 1 rank over 1 node x 2 ranks,
  both on this machine (torch's elastic launcher, a loopback c10d rendezvous, gloo), the same
  global batch; the two jobs run together and take turns step by step (node_steps.py), so a
  busy machine slows both alike. Goal <= 1.10. ``--node-steps 0`` skips it.
- peak_rss_mb: peak resident memory of this process.

Usage: python benchmarks/bench_supernet.py [--params params.yaml] [--archs 10] [--batch 128]
Timings are wall-clock; on a shared machine compare ratios, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onceflow.config import load_params
from onceflow.supernet import Supernet
from onceflow.supernet.dwconv import fast_depthwise
from onceflow.train.sandwich import sandwich_step, step_archs
from onceflow.train.schedule import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from configured import configured_space  # noqa: E402
from node_steps import median_step_s  # noqa: E402


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x, y) -> float:
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sandwich-steps", type=int, default=6)
    ap.add_argument("--channels", type=int, help="input channels (default: from params data)")
    ap.add_argument("--classes", type=int, help="classes (default: from params data.source)")
    ap.add_argument("--node-steps", type=int, default=20, help="timed steps per layout")
    args = ap.parse_args()

    params = load_params(args.params)
    torch.set_num_threads(params.base.threads)
    torch.manual_seed(0)
    cfg = params.train
    mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
    # The input the configured data gives (synthetic tensors of that shape): channels, classes and
    # the largest resolution; image folders need --classes (their class count is in the files).
    try:
        space = configured_space(params, args.channels, args.classes)
    except ValueError as err:
        ap.error(f"{err} (--classes)")
    channels, classes, side = space.in_channels, space.n_classes, space.image_size
    net = Supernet(space).to(memory_format=mem).train()
    rng = np.random.default_rng(0)
    archs = [space.max_arch(), space.min_arch()] + [
        space.sample(rng) for _ in range(args.archs - 2)
    ]
    y = torch.randint(0, classes, (args.batch,))

    ratios = []
    for arch in archs:
        x = torch.randn(args.batch, channels, arch.resolution, arch.resolution).contiguous(
            memory_format=mem
        )
        net.set_active(arch)
        static = net.extract(arch).to(memory_format=mem).train()
        opt_d = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        opt_s = torch.optim.SGD(static.parameters(), lr=1e-3, momentum=0.9)
        _train_step(net, opt_d, x, y), _train_step(static, opt_s, x, y)  # warm-up
        dyn, sta = [], []
        for _ in range(args.repeats):  # interleaved
            dyn.append(_train_step(net, opt_d, x, y))
            sta.append(_train_step(static, opt_s, x, y))
        ratios.append(statistics.median(dyn) / statistics.median(sta))

    opt = make_optimizer(net, 0.01, cfg.momentum, cfg.weight_decay)
    x_native = torch.randn(cfg.batch_size, channels, side, side)
    yb = torch.randint(0, classes, (cfg.batch_size,))
    phase = cfg.phases[-1]

    def sandwich_s(g: int) -> float:
        t = time.perf_counter()
        sandwich_step(net, opt, x_native, yb, step_archs(space, phase, cfg.n_random, 0, g), cfg)
        return time.perf_counter() - t

    sandwich_s(0)  # warm-up (compiles the depthwise kernel)
    fast, native = [], []
    for g in range(1, args.sandwich_steps + 1):  # interleaved, the same sandwich for both
        fast.append(sandwich_s(g))
        with fast_depthwise(False):
            native.append(sandwich_s(g))
    ips = cfg.batch_size * len(fast) / sum(fast)

    nodes: dict[str, float] = {}
    if args.node_steps > 0:
        step_s = median_step_s(args.params, args.node_steps)
        nodes = {"two_nodes_over_one": round(step_s["2x1"] / step_s["1x2"], 3),
                 "step_s_1node_x2": round(step_s["1x2"], 4),
                 "step_s_2nodes_x1": round(step_s["2x1"], 4)}  # fmt: skip

    print(json.dumps({
        "dynamic_over_static": round(statistics.median(ratios), 4),
        "dynamic_over_static_max": round(max(ratios), 4),
        "n_archs": len(archs),
        "sandwich_images_per_s": round(ips, 1),
        # torch's own depthwise weight gradient vs supernet/dwconv.py's (median step time ratio)
        "fast_depthwise_speedup": round(statistics.median(native) / statistics.median(fast), 3),
        "sandwich_images_per_s_torch_dw": round(cfg.batch_size * len(native) / sum(native), 1),
        "sandwich_subnets_per_step": 2 + cfg.n_random,
        "batch_size": cfg.batch_size,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": params.base.threads,
        **nodes,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
