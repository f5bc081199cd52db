"""Speed comparisons of the measurement protocol that tests no longer assert (a loaded 2-core
machine can break any wall-clock window): each figure is a ratio measured within this one run.

- ``interleaved_over_alone``: the median latency of one model timed among ~30 others over the
  same model timed alone, under the default protocol of params.yaml (priming, ``prime``) and
  with ``prime: 0``. Priming should keep it near 1 (0.95-1.1 measured here), cold caches show
  without it (1.65-2.5). Short alternating blocks, so load changes hit both alike.
- ``big_over_small``: a 4-layer 64-channel conv stack over a 1x1 conv (ONNX Runtime), > 5.
- ``max_over_min_arch``: the tiny test space's max arch over its min arch, each extracted and
  timed by the table's backend, > 1.

    python benchmarks/bench_protocol.py [--blocks 8] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

from onceflow.config import LatencyTarget, MeasureProtocolConfig, parse_params  # noqa: E402
from onceflow.latency.backends import make_backend  # noqa: E402
from onceflow.latency.protocol import MeasureProtocol, sample_interleaved  # noqa: E402
from onceflow.latency.table import protocol_from_config  # noqa: E402


def _head() -> tuple[nn.Module, tuple[int, ...]]:
    """A small model whose latency is mostly reading its ~1 MB of weights: cold caches show."""
    net = nn.Sequential(nn.Conv2d(512, 512, 1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
    return net.eval(), (1, 512, 1, 1)


def _others(n: int) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """``n`` cheap, varied models: every other one streams ~1 MB of weights (a 1x1 conv), the
    rest run small convolutions with assorted kernels and activations."""
    out: list[tuple[nn.Module, tuple[int, ...]]] = []
    for i in range(n):
        if i % 2:
            out.append((nn.Sequential(nn.Conv2d(512, 512, 1), nn.ReLU()).eval(), (1, 512, 1, 1)))
            continue
        c, k = 8 * (1 + i % 4), (1, 3, 5, 7)[i % 4]
        act = (nn.ReLU(), nn.Hardswish(), nn.Sigmoid(), nn.GELU())[(i // 4) % 4]
        net = nn.Sequential(
            nn.Conv2d(4, c, k, padding=k // 2),
            act,
            nn.Conv2d(c, c, 3, padding=1, groups=c),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, 10),
        )
        out.append((net.eval(), (1, 4, 16, 16)))
    return out


def alone_vs_among(items: list, proto: MeasureProtocol, blocks: int) -> float:
    """Median latency of ``items[0]`` timed among all ``items`` over timed alone."""
    alone, among = [], []
    for _ in range(blocks):
        alone.append(sample_interleaved(items[:1], proto)[0])
        among.append(sample_interleaved(items, proto)[0])
    return float(np.median(np.concatenate(among)) / np.median(np.concatenate(alone)))


def interleave_ratios(blocks: int, repeats: int) -> dict[str, float]:
    with open("params.yaml", encoding="utf-8") as fh:
        cfg = parse_params({"latency": yaml.safe_load(fh)["latency"]}).latency
    target = cfg.targets["ort-cpu"]
    proto = replace(protocol_from_config(cfg, target, seed=0), repeats=repeats)
    backend = make_backend(target)
    items = [backend.prepare(m, shape) for m, shape in [_head(), *_others(30)]]
    try:
        return {
            f"prime_{proto.prime}": round(alone_vs_among(items, proto, blocks), 3),
            "prime_0": round(alone_vs_among(items, replace(proto, prime=0), blocks), 3),
        }
    finally:
        for it in items:
            it.close()


def big_over_small(repeats: int) -> float:
    be = make_backend(LatencyTarget())
    small = nn.Conv2d(4, 4, 1).eval()
    big = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(4)]).eval()
    cfg = MeasureProtocolConfig(warmup=2, repeats=repeats, number=1, sessions=1)
    proto = MeasureProtocol.from_config(cfg, seed=0, clock="wall")
    s_small, s_big = be.measure_many([(small, (1, 4, 8, 8)), (big, (1, 64, 32, 32))], proto)
    return round(s_big.median / s_small.median, 2)


def max_over_min_arch(repeats: int) -> float:
    from onceflow.supernet import SearchSpace, Supernet
    from tests.conftest import tiny_supernet_config

    space = SearchSpace(tiny_supernet_config(), in_channels=1, n_classes=10, image_size=28)
    net = Supernet(space).eval()
    lo, hi = space.min_arch(), space.max_arch()
    cfg = MeasureProtocolConfig(warmup=2, repeats=repeats, number=1, sessions=1)
    proto = MeasureProtocol.from_config(cfg, seed=0, clock="wall")
    shape = lambda a: (1, 1, a.resolution, a.resolution)  # noqa: E731
    s_lo, s_hi = make_backend(LatencyTarget()).measure_many(
        [(net.extract(lo), shape(lo)), (net.extract(hi), shape(hi))], proto
    )
    return round(s_hi.median / s_lo.median, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    out = {
        "interleaved_over_alone": interleave_ratios(args.blocks, args.repeats),
        "big_over_small": big_over_small(max(15, args.repeats)),
        "max_over_min_arch": max_over_min_arch(max(15, args.repeats)),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
