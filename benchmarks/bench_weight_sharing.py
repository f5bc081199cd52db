"""The weight-sharing gap: supernet-extracted subnets vs the same subnets trained alone.

Three subnets spanning the latency range (the picks of ``--selection``, a search's
``selected.json``; without one, the space's min, mid and max archs) are each trained alone from
scratch with the supernet's recipe (``params.train``: phases, epochs, lr, batch, augmentation;
label loss only, since a lone subnet has no sandwich to distill from), through the supernet
training loop itself (``train_supernet(..., only_arch=...)``). Both the extracted subnet (BN
recalibrated, no fine-tune) and the lone one are scored the same way: test accuracy after BN
recalibration on ``train.bn_calib_images`` train images.

Prints JSON: per arch the two accuracies and ``gap_pp`` (supernet - alone, percentage points;
>= 0 means weight sharing costs nothing), ``mean_gap_pp``, and ``cost_ratio`` = supernet
training seconds (``--supernet-metrics``) / the sum of the lone runs' seconds. ``--epochs-scale``
< 1 shortens the lone runs (stated in the output: the comparison is then biased to the supernet).

Usage: python benchmarks/bench_weight_sharing.py [--params params.yaml] [--supernet
models/supernet] [--data data/prepared] [--selection search/ort-cpu/selected.json]
[--supernet-metrics metrics/supernet.json] [--epochs-scale 1.0] [--max-train N]
[--wait-supernet-s S]  (the lone runs need no supernet: they may start while it still trains)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from onceflow.accuracy import recalibrated_accuracy
from onceflow.config import load_params
from onceflow.data.prepared import PreparedData, Split, load_prepared
from onceflow.supernet import Arch, SearchSpace, load_supernet
from onceflow.train.loop import train_supernet


def summarize(rows: list[dict], sn_seconds: float | None, lone_seconds: float) -> dict:
    """Each row's ``gap_pp`` (supernet - alone accuracy, percentage points; set in place), their
    mean, and the cost ratio (supernet seconds / the lone runs' seconds)."""
    for r in rows:
        r["gap_pp"] = round(100 * (r["supernet_test_acc"] - r["alone_test_acc"]), 3)
    return {
        "archs": rows,
        "mean_gap_pp": round(float(np.mean([r["gap_pp"] for r in rows])), 3),
        "supernet_train_seconds": sn_seconds,
        "alone_train_seconds_sum": round(lone_seconds, 2),
        "cost_ratio": round(sn_seconds / round(lone_seconds, 2), 3) if sn_seconds else None,
    }


def pick_archs(space: SearchSpace, selection: Path | None) -> list[tuple[str, Arch]]:
    """(where it came from, arch) for three archs spanning the latency range."""
    if selection is not None and selection.is_file():
        doc = json.loads(selection.read_text())
        out = []
        for e in doc["selected"]:
            raw = e.get("arch_json", e.get("arch"))
            arch = Arch.parse(raw) if isinstance(raw, str) else Arch.from_json(raw)
            out.append((f"{selection} budget {e.get('budget_ms')}", space.canonical(arch)))
        uniq = list(dict((a, (src, a)) for src, a in out).values())
        if len(uniq) >= 3:
            return [uniq[0], uniq[len(uniq) // 2], uniq[-1]]
    return [("min", space.min_arch()), ("mid", space.mid_arch()), ("max", space.max_arch())]


def subset(data: PreparedData, n: int | None) -> PreparedData:
    if n is None or n >= len(data.train):
        return data
    idx = np.sort(np.random.default_rng(0).choice(len(data.train), n, replace=False))
    tr = Split(images=np.asarray(data.train.images[idx]), labels=np.asarray(data.train.labels[idx]))
    return PreparedData(train=tr, val=data.val, test=data.test, meta=data.meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--supernet", default="models/supernet")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--selection", type=Path, default=Path("search/ort-cpu/selected.json"))
    ap.add_argument("--supernet-metrics", type=Path, default=Path("metrics/supernet.json"))
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--max-train", type=int, default=None, help="train subset (quick checks)")
    ap.add_argument("--wait-supernet-s", type=float, default=0.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    params = load_params(args.params)
    torch.set_num_threads(params.base.threads)
    seed, cfg = params.base.seed, params.train
    if args.epochs_scale != 1.0:
        phases = [p.model_copy(update={"epochs": p.epochs * args.epochs_scale}) for p in cfg.phases]
        cfg = cfg.model_copy(update={"phases": phases})
    cfg = cfg.model_copy(update={"epoch_eval_images": 0})  # per-epoch max/min curves: not ours
    data = subset(load_prepared(args.data, mmap=False), args.max_train)
    m = data.meta
    space = SearchSpace(params.supernet, m.channels, m.n_classes, min(m.height, m.width))

    def score(net, arch: Arch) -> float:
        return recalibrated_accuracy(
            net, arch, data, n_calib=cfg.bn_calib_images, split="test",
            batch_size=cfg.eval_batch_size, seed=seed,
        )  # fmt: skip

    rows, lone_seconds = [], 0.0
    for source, arch in pick_archs(space, args.selection):
        t0 = time.perf_counter()
        lone = train_supernet(data, space, cfg, seed=seed, only_arch=arch, progress=False)
        lone_seconds += lone.train_seconds
        rows.append(
            {
                "arch": str(arch),
                "picked_from": source,
                "alone_test_acc": score(lone.model.eval(), arch),
                "alone_train_seconds": round(lone.train_seconds, 1),
                "alone_wall_seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)  # progress: one line per finished arch
    deadline = time.monotonic() + args.wait_supernet_s
    while not (Path(args.supernet) / "space.json").is_file() and time.monotonic() < deadline:
        time.sleep(30)
    supernet = load_supernet(args.supernet).eval()
    if supernet.space != space:
        raise SystemExit(f"{args.supernet} was trained on another search space than --params")
    for r in rows:
        arch = space.canonical(Arch.parse(r["arch"]))
        r["supernet_test_acc"] = score(supernet, arch)
    sn_seconds = None
    if args.supernet_metrics.is_file():
        sn_seconds = json.loads(args.supernet_metrics.read_text()).get("train_seconds")
    out = {
        **summarize(rows, sn_seconds, lone_seconds),
        "alone_epochs": [p.epochs for p in cfg.phases],
        "supernet_epochs": [p.epochs for p in params.train.phases],
        "epochs_scale": args.epochs_scale,
        "n_train": len(data.train),
        "note": (
            "lone runs: one process, global batch as the supernet's; supernet: "
            f"{params.train.processes} data-parallel ranks. Seconds are wall time on this machine "
            "(a shared machine inflates both unevenly)."
        ),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
