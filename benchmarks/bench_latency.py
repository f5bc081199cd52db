"""Latency-table benchmark: fidelity of the default target's table and estimator throughput.

Builds the table exactly as the stage does (default params, ``--target``, the trained supernet in
``models/supernet`` when present, else a randomly initialized one over the params' space --
latency does not depend on weights) and prints one JSON object: the validation fidelity
figures, LUT size and build time, and ``estimator_archs_per_s`` (vectorized prediction over
encoded archs, one thread). Timings on a shared machine are noisy: ``noise_cv`` says how much.

    python benchmarks/bench_latency.py [--params params.yaml] [--target ort-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onceflow.config import load_params  # noqa: E402
from onceflow.latency import LatencyEstimator, build_latency_table, make_backend  # noqa: E402
from onceflow.stage import setup_logging  # noqa: E402
from onceflow.supernet import SearchSpace, Supernet, build_layer, load_supernet  # noqa: E402


def archs_per_second(est: LatencyEstimator, space: SearchSpace, n: int = 200_000) -> float:
    rng = np.random.default_rng(0)
    base = space.encode_batch([space.sample(rng) for _ in range(2000)])
    enc = np.ascontiguousarray(np.tile(base, (n // len(base), 1)))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        est.predict(enc)
        best = min(best, time.perf_counter() - t0)
    return len(enc) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--supernet", default="models/supernet")
    ap.add_argument("--records", default=None, help="also write per-subnet records (JSON) here")
    args = ap.parse_args()
    setup_logging("WARNING")
    params = load_params(args.params)
    torch.set_num_threads(params.base.threads)
    if (Path(args.supernet) / "space.json").is_file():
        supernet, source = load_supernet(args.supernet), args.supernet
    else:
        space = SearchSpace(params.supernet, in_channels=1, n_classes=10, image_size=28)
        supernet, source = Supernet(space).eval(), "random-init (default space, 28x28x1)"
    space = supernet.space
    backend = make_backend(params.latency.targets[args.target])
    t0 = time.perf_counter()
    res = build_latency_table(
        space,
        build_layer,
        supernet.extract,
        backend,
        params.latency,
        args.target,
        params.base.seed,
    )
    stage_seconds = time.perf_counter() - t0
    est = LatencyEstimator(space, res.lut, res.calibration)
    torch.set_num_threads(1)
    m = res.metrics
    keys = (
        "n_validation",
        "mape",
        "within_10pct",
        "within_5pct",
        "max_abs_rel_err",
        "kendall_tau",
        "spearman",
        "noise_cv",
        "mape_uncalibrated",
        "kendall_tau_uncalibrated",
        "calibration_model",
        "calibration_loo_mape",
        "n_calibration",
        "lut_entries",
        "lut_noise_cv",
        "build_seconds",
    )
    out = {
        "target": args.target,
        "supernet": source,
        **{k: m[k] for k in keys},
        "table_seconds": round(stage_seconds, 1),
        "estimator_archs_per_s": round(archs_per_second(est, space)),
    }
    if args.records:
        Path(args.records).write_text(json.dumps(res.records, indent=1))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
