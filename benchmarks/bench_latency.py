"""Latency-table benchmark: fidelity of the default target's table and estimator throughput.

Builds the table exactly as the stage does (default params, ``--target``, the trained supernet in
``models/supernet`` when present, else a randomly initialized one over the params' space --
latency does not depend on weights) and prints one JSON object: the validation fidelity
figures, LUT size and build time, ``estimator_archs_per_s`` (vectorized prediction over
encoded archs, one thread), and ``package_over_estimator``: a few subnets (min, max, random)
exported as the package stage ships them (dynamic-batch ONNX) and timed ALONE with the target's
backend and protocol, over the estimator's prediction -- end to end, what a published latency
is against the number the search budgeted with. Timings on a shared machine are noisy:
``noise_cv`` says how much.

    python benchmarks/bench_latency.py [--params params.yaml] [--target ort-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onceflow.config import Params, load_params  # noqa: E402
from onceflow.latency import (  # noqa: E402
    LatencyEstimator,
    build_latency_table,
    make_backend,
)
from onceflow.package.export import export_onnx  # noqa: E402
from onceflow.package.pipeline import backend_fns  # noqa: E402
from onceflow.stage import setup_logging  # noqa: E402
from onceflow.supernet import Arch, SearchSpace, Supernet, build_layer, load_supernet  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from configured import configured_space  # noqa: E402


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


def package_over_estimator(
    supernet: Supernet,
    est: LatencyEstimator,
    params: Params,
    target: str,
    n_random: int = 3,
    passes: int = 3,
) -> dict:
    """Packaged-model latency (timed alone, as ``package@target`` does) over the prediction.

    Each model is timed as the package stage times it (the fastest of a few runs alone), in
    ``passes`` passes over all of them; its median over the passes is reported and
    ``pass_spread`` says how much the passes disagree."""
    space, t = supernet.space, params.latency.targets[target]
    rng = np.random.default_rng(params.base.seed + 7)
    archs: list[Arch] = list(dict.fromkeys([space.min_arch(), space.max_arch()]))
    archs += [space.sample(rng) for _ in range(n_random)]
    subs = [supernet.extract(a).eval() for a in archs]
    chws = [(space.in_channels, a.resolution, a.resolution) for a in archs]
    # The exact bytes a package ships (ONNX Runtime targets time them, as package@target does).
    onnx = [
        export_onnx(m, chw, opset=params.package.opset) for m, chw in zip(subs, chws, strict=True)
    ]
    measure, _, _ = backend_fns(t, params, target)  # exactly what package@target times
    samples = np.empty((passes, len(archs)))
    for p in range(passes):
        for i, (sub, chw) in enumerate(zip(subs, chws, strict=True)):
            samples[p, i] = measure(onnx[i], sub, (t.batch_size, *chw))["median"]
    measured = np.median(samples, axis=0)
    predicted = np.array([est.predict_arch(a) for a in archs])
    ratio = measured / predicted
    return {
        "n": len(archs),
        "median": round(float(np.median(ratio)), 3),
        "max": round(float(ratio.max()), 3),
        "min": round(float(ratio.min()), 3),
        "package_ms": [round(float(v), 4) for v in measured],
        "predicted_ms": [round(float(v), 4) for v in predicted],
        "pass_spread": round(float(np.median(np.ptp(samples, axis=0) / measured)), 3),
    }


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
        space = configured_space(params)
        side, c = space.image_size, space.in_channels
        supernet = Supernet(space).eval()
        source = f"random-init ({side}x{side}x{c}, {space.n_classes} classes)"
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
    package = package_over_estimator(supernet, est, params, args.target)
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
        "protocol": {k: res.lut.meta["protocol"][k] for k in ("repeats", "prime", "sessions")},
        "package_over_estimator": package,
    }
    if args.records:
        Path(args.records).write_text(json.dumps(res.records, indent=1))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
