"""The weight-sharing gap: supernet-extracted subnets vs the same subnets trained alone.

Subnets spanning the latency range (``--archs``: the picks of ``--selection``, a search's
``selected.json``, and the space's min and mid archs; without a selection, min, mid and max)
are each trained alone from scratch, ``--seeds`` times (seeds ``base.seed + i``), with the
supernet's recipe (``params.train``: phases, epochs, lr, batch, augmentation; label loss only,
since a lone subnet has no sandwich to distill from), through the supernet training loop itself
(``train_supernet(..., only_arch=...)``). Both the extracted subnet (BN recalibrated, no
fine-tune) and the lone one are scored the same way: test accuracy after BN recalibration on
``train.bn_calib_images`` train images (the same images for both).

The supernet is the default run's (``--supernet``, ``--supernet-metrics`` for its training
seconds), or with ``--supernet-seeds N`` trained here N times (seeds ``base.seed + i``, the
same params, ``--epochs-scale`` and ``--max-train`` as the lone runs: a like-for-like
comparison at any scale, and its cost measured in this invocation). Lone seed i is paired with
supernet i mod N.

Prints JSON: per arch the accuracies per seed, the gaps (``gaps_pp``: supernet - alone,
percentage points; >= 0 means weight sharing costs nothing), their mean ``gap_pp`` and sample
standard deviation ``gap_sd_pp``; over all arch x seed gaps ``mean_gap_pp`` and ``gap_ci95_pp``
(a Student t-interval, see ``gap_ci_method``), the same per group (``picks``, ``min``, ``mid``,
``max``), and ``cost_ratio`` = one supernet's training seconds / one seed's lone runs' seconds
(every arch trained alone once; ``alone_train_seconds_sum`` is all seeds'). ``--epochs-scale``
< 1 shortens the runs; with a loaded supernet only the lone ones (the comparison is then biased
to the supernet: stated in the output).

``--lone-cache FILE`` (JSON) keeps each lone run's test accuracy and seconds under a digest of
what makes its weights: the search space, the train params a lone run uses (not the sandwich's
sampling and distillation options, which a lone run ignores), the seed, the arch and the data's
content and size. A later invocation reuses them, so recipes that differ only in supernet
options, or a second seed added, retrain nothing already trained. The digest also holds the
training code and library versions (the checkpoints' key, ``train.resume.code_digest``).

Usage: python benchmarks/bench_weight_sharing.py [--params params.yaml] [--supernet
models/supernet] [--data data/prepared] [--selection search/ort-cpu/selected.json]
[--supernet-metrics metrics/supernet.json] [--seeds 2] [--archs picks,min,mid]
[--supernet-seeds 0] [--epochs-scale 1.0] [--max-train N] [--wait-supernet-s S]
[--lone-cache FILE]
(the lone runs need no supernet: they may start while it still trains)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from onceflow.accuracy import recalibrated_accuracy
from onceflow.config import TrainConfig, load_params
from onceflow.data.prepared import PreparedData, Split, data_identity, load_prepared
from onceflow.io import sha256_json
from onceflow.supernet import Arch, SearchSpace, Supernet, load_supernet
from onceflow.train.loop import train_supernet
from onceflow.train.resume import code_digest

GROUPS = ("picks", "min", "mid", "max")
# Train params a lone run (train_supernet(only_arch=...): one subnet, label loss) never reads,
# and those that do not change weights: left out of a lone run's cache key.
SANDWICH_ONLY = frozenset(
    {"n_random", "distill", "student_ce", "alpha_min", "alpha_max", "alpha_clip",
     "attentive_pool", "attentive_pick", "attentive_proxy", "regularize_max_only",
     "epoch_eval_images", "checkpoint_every_steps", "keep_checkpoints", "processes", "nodes",
     "rdzv_endpoint", "max_restarts", "rdzv_timeout_s", "rdzv_last_call_s", "ddp_backend"}
)  # fmt: skip
CI_METHOD = (
    "Student t-interval, 95%, over the arch x seed gaps (n = archs x seeds, df n-1), treating "
    "them as independent; with one supernet its own seed-to-seed noise is not in the interval"
)


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the Student t confidence interval of the mean of ``values`` (at
    least two)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("a t-interval needs at least two values")
    mean = float(x.mean())
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def _gap_stats(gaps: list[float]) -> dict:
    mean, lo, hi = t_interval(gaps)
    return {
        "mean_gap_pp": round(mean, 3),
        "gap_ci95_pp": [round(lo, 3), round(hi, 3)],
        "n": len(gaps),
    }


def summarize(rows: list[dict], sn_seconds: float | None, lone_seconds: list[float]) -> dict:
    """Each row's gaps (supernet - alone accuracy, percentage points; lone seed i against
    supernet i mod N), their mean and spread (set in place); over all rows' gaps the mean and
    its t-interval, per group too; and the cost ratio: ``sn_seconds`` (one supernet) over the
    lone runs' seconds per seed (``lone_seconds``: one total per seed, every arch once)."""
    for r in rows:
        sn, alone = r["supernet_test_acc"], r["alone_test_acc"]
        r["gaps_pp"] = [round(100 * (sn[i % len(sn)] - a), 3) for i, a in enumerate(alone)]
        r["gap_pp"] = round(float(np.mean(r["gaps_pp"])), 3)
        r["gap_sd_pp"] = round(float(np.std(r["gaps_pp"], ddof=1)), 3) if len(alone) > 1 else None
    all_gaps = [g for r in rows for g in r["gaps_pp"]]
    groups = {}
    for name in GROUPS:
        gaps = [g for r in rows if r["group"] == name for g in r["gaps_pp"]]
        if len(gaps) >= 2:
            groups[name] = _gap_stats(gaps)
    per_seed = float(np.mean(lone_seconds))
    return {
        "archs": rows,
        **_gap_stats(all_gaps),
        "gap_ci_method": CI_METHOD,
        "groups": groups,
        "supernet_train_seconds": sn_seconds,
        "alone_train_seconds_per_seed": round(per_seed, 3),
        "alone_train_seconds_sum": round(float(np.sum(lone_seconds)), 3),
        # seconds to the millisecond: a tiny run's training takes well under a tenth of one
        "cost_ratio": round(sn_seconds / per_seed, 3) if sn_seconds and per_seed > 0 else None,
    }


def lone_key(
    space: SearchSpace, cfg: TrainConfig, data: PreparedData, arch: Arch, seed: int
) -> str:
    """The cache key of a lone run: what makes its weights (see ``--lone-cache``)."""
    return sha256_json(
        {
            "space": space.to_json(),
            "train": cfg.model_dump(mode="json", exclude=set(SANDWICH_ONLY)),
            "data": data_identity(data),
            "n": len(data.train),
            "arch": str(arch),
            "seed": seed,
            "code": code_digest(),  # training code and torch/numpy/numba versions
        }
    )[:24]


def _selection_picks(space: SearchSpace, selection: Path | None) -> list[tuple[str, Arch]]:
    """(where it came from, arch) for three picks spanning the latency range; [] without a
    selection of three distinct archs."""
    if selection is None or not selection.is_file():
        return []
    doc = json.loads(selection.read_text())
    out = []
    for e in doc["selected"]:
        raw = e.get("arch_json", e.get("arch"))
        arch = Arch.parse(raw) if isinstance(raw, str) else Arch.from_json(raw)
        out.append((f"{selection} budget {e.get('budget_ms')}", space.canonical(arch)))
    uniq = list(dict((a, (src, a)) for src, a in out).values())
    return [uniq[0], uniq[len(uniq) // 2], uniq[-1]] if len(uniq) >= 3 else []


def pick_archs(space: SearchSpace, selection: Path | None, groups: list[str]) -> list[dict]:
    """One row per distinct arch: {arch, group, picked_from}, in ``groups`` order; "picks"
    without a usable selection falls back to the max arch (so: min, mid and max)."""
    picks = _selection_picks(space, selection)
    if "picks" in groups and not picks:
        logging.warning(
            "no selection of three archs at %s: the max arch instead of picks", selection
        )
        groups = [g if g != "picks" else "max" for g in groups]
    named = {"min": space.min_arch(), "mid": space.mid_arch(), "max": space.max_arch()}
    rows: dict[Arch, dict] = {}
    for g in groups:
        for src, arch in picks if g == "picks" else [(g, named[g])]:
            rows.setdefault(arch, {"arch": str(arch), "group": g, "picked_from": src})
    return list(rows.values())


def subset(data: PreparedData, n: int | None) -> PreparedData:
    if n is None or n >= len(data.train):
        return data
    idx = np.sort(np.random.default_rng(0).choice(len(data.train), n, replace=False))
    tr = Split(images=np.asarray(data.train.images[idx]), labels=np.asarray(data.train.labels[idx]))
    return PreparedData(train=tr, val=data.val, test=data.test, meta=data.meta)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--supernet", default="models/supernet")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--selection", type=Path, default=Path("search/ort-cpu/selected.json"))
    ap.add_argument("--supernet-metrics", type=Path, default=Path("metrics/supernet.json"))
    ap.add_argument("--seeds", type=int, default=2, help="lone runs per arch (>= 2)")
    ap.add_argument("--archs", default="picks,min,mid", help=f"comma list of {', '.join(GROUPS)}")
    ap.add_argument("--supernet-seeds", type=int, default=0, help="train N supernets here")
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--max-train", type=int, default=None, help="train subset (quick checks)")
    ap.add_argument("--wait-supernet-s", type=float, default=0.0)
    ap.add_argument("--lone-cache", type=Path, default=None, help="reuse lone runs (JSON)")
    args = ap.parse_args(argv)
    args.groups = [g.strip() for g in args.archs.split(",") if g.strip()]
    if args.seeds < 2:
        ap.error(f"--seeds {args.seeds}: a gap with error bars needs at least 2 seeds")
    if args.supernet_seeds < 0:
        ap.error(f"--supernet-seeds {args.supernet_seeds}: use 0 (load --supernet) or more")
    if not args.groups or set(args.groups) - set(GROUPS):
        ap.error(f"--archs {args.archs!r}: a comma list of {', '.join(GROUPS)}")
    if args.epochs_scale <= 0:
        ap.error(f"--epochs-scale {args.epochs_scale}: must be > 0")
    return args


def _scaled(cfg: TrainConfig, scale: float) -> TrainConfig:
    if scale != 1.0:
        phases = [p.model_copy(update={"epochs": p.epochs * scale}) for p in cfg.phases]
        cfg = cfg.model_copy(update={"phases": phases})
    return cfg.model_copy(update={"epoch_eval_images": 0})  # per-epoch max/min curves: not ours


def _lone_runs(
    rows: list[dict],
    space: SearchSpace,
    cfg: TrainConfig,
    data: PreparedData,
    seed: int,
    seeds: int,
    cache_path: Path | None,
    score: Callable[[Supernet, Arch], float],
) -> list[float]:
    """Train each row's arch alone ``seeds`` times (or take it from the cache), appending the
    test accuracies and seconds to the rows; the lone runs' total seconds per seed."""
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    lone_seconds = []
    for i in range(seeds):
        total = 0.0
        for r in rows:
            arch = space.canonical(Arch.parse(r["arch"]))
            key = lone_key(space, cfg, data, arch, seed + i)
            if key not in cache:
                lone = train_supernet(
                    data, space, cfg, seed=seed + i, only_arch=arch, progress=False
                )
                cache[key] = {
                    "arch": str(arch),
                    "seed": seed + i,
                    "test_acc": score(lone.model.eval(), arch),
                    "train_seconds": round(lone.train_seconds, 3),
                }
                if cache_path is not None:
                    cache_path.write_text(json.dumps(cache, indent=1) + "\n")
            total += cache[key]["train_seconds"]
            r.setdefault("alone_test_acc", []).append(cache[key]["test_acc"])
            r.setdefault("alone_train_seconds", []).append(cache[key]["train_seconds"])
            print(json.dumps({"seed": seed + i, **r}), flush=True)  # progress, one line a run
        lone_seconds.append(total)
    return lone_seconds


def main(argv: list[str] | None = None) -> None:
    args = _args(argv)
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    torch.set_num_threads(params.base.threads)
    seed, cfg = params.base.seed, _scaled(params.train, args.epochs_scale)
    data = subset(load_prepared(args.data, mmap=False), args.max_train)
    m = data.meta
    space = SearchSpace(params.supernet, m.channels, m.n_classes, min(m.height, m.width))

    def score(net: Supernet, arch: Arch) -> float:
        return recalibrated_accuracy(
            net, arch, data, n_calib=cfg.bn_calib_images, split="test",
            batch_size=cfg.eval_batch_size, seed=seed,
        )  # fmt: skip

    rows = pick_archs(space, args.selection, args.groups)
    lone_seconds = _lone_runs(rows, space, cfg, data, seed, args.seeds, args.lone_cache, score)
    if args.supernet_seeds:
        nets, secs = [], []
        for i in range(args.supernet_seeds):
            out = train_supernet(data, space, cfg, seed=seed + i, progress=False)
            nets.append(out.model.eval())
            secs.append(out.train_seconds)
        sn_seconds: float | None = round(float(np.mean(secs)), 3)
    else:
        deadline = time.monotonic() + args.wait_supernet_s
        while not (Path(args.supernet) / "space.json").is_file() and time.monotonic() < deadline:
            time.sleep(30)
        nets = [load_supernet(args.supernet).eval()]
        if nets[0].space != space:
            raise SystemExit(f"{args.supernet} was trained on another search space than --params")
        sn_seconds = None
        if args.supernet_metrics.is_file():
            sn_seconds = json.loads(args.supernet_metrics.read_text()).get("train_seconds")
    for r in rows:
        arch = space.canonical(Arch.parse(r["arch"]))
        r["supernet_test_acc"] = [score(net, arch) for net in nets]

    out = {
        **summarize(rows, sn_seconds, lone_seconds),
        "seeds": [seed + i for i in range(args.seeds)],
        "supernets": "trained here" if args.supernet_seeds else str(args.supernet),
        "supernet_seeds": [seed + i for i in range(args.supernet_seeds)] or None,
        "alone_epochs": [p.epochs for p in cfg.phases],
        "supernet_epochs": [
            p.epochs for p in (cfg if args.supernet_seeds else params.train).phases
        ],
        "epochs_scale": args.epochs_scale,
        "n_train": len(data.train),
        "note": (
            "lone runs: one process, global batch as the supernet's; supernet: "
            f"{'one process here' if args.supernet_seeds else f'{params.train.processes} ranks'}"
            ". Seconds are wall time on this machine (a shared machine inflates both unevenly)."
        ),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
