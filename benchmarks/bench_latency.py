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

Issue 25 adds (the table is then built with ``estimator: measured`` and ``--measured-subnets``
whole subnets to fit on, the 50 validation subnets held out):

* ``measured_estimator_*``: the measured-subnet estimator's held-out figures, and its learning
  curve over N = 20...200 training subnets (arch features only, and with the LUT sum as a
  feature);
* ``idle_*`` / ``loaded_*``: the fp32 LUT table's held-out fidelity (calibrated on K subnets, as
  the default stage does) built once as is and once with a competing CPU-bound process switching
  on and off every ``--toggle-s`` seconds; with the measured estimator's figures for both;
* ``scenario_kendall``: Kendall tau of per-image latency under other deployment settings
  (batch 32 and 64, 2 threads, torch eager) against ``ort-cpu`` (batch 1) on the same subnets.

    python benchmarks/bench_latency.py [--params params.yaml] [--target ort-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from onceflow.latency.fidelity import fidelity  # noqa: E402
from onceflow.latency.measured import MeasuredEstimator, fit_measured  # noqa: E402
from onceflow.latency.protocol import LatencyStats  # noqa: E402
from onceflow.latency.table import protocol_from_config  # noqa: E402
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
    measure, *_ = backend_fns(t, params, target)  # exactly what package@target times
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


CURVE = (20, 50, 100, 150, 200)
BUSY = """
import time
on, off = {on}, {off}
while True:
    end = time.time() + on
    while time.time() < end:
        pass
    time.sleep(off)
"""


def learning_curve(space: SearchSpace, records: list[dict]) -> dict:
    """Held-out figures of the measured estimator fit on the first N training subnets."""
    train = [r for r in records if r["role"] != "validation"]
    valid = [r for r in records if r["role"] == "validation"]

    def arrays(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        enc = space.encode_batch([Arch.parse(r["arch"]) for r in rows])
        y = np.array([r["measured_ms"] for r in rows])
        return enc, y, np.array([r["raw_lut_sum_ms"] for r in rows])

    et, yt, lt = arrays(train)
    ev, yv, lv = arrays(valid)
    out = {}
    for n in (n for n in CURVE if n <= len(yt)):
        row = {}
        for name, lut in (("arch", None), ("arch+lut", lt)):
            model = fit_measured(space, et[:n], yt[:n], None if lut is None else lut[:n])
            est = MeasuredEstimator(
                space, model, (lambda e, lv=lv: lv) if lut is not None else None
            )
            f = fidelity(est.predict(ev), yv)
            row[name] = {
                "kendall_tau": round(f["kendall_tau"], 3),
                "spearman": round(f["spearman"], 3),
                "within_10pct": round(f["within_10pct"], 3),
                "model": model.cv["chosen"],
            }
        out[str(n)] = row
    return out


def build(space, supernet, params: Params, target: str, load: bool, toggle_s: float):  # noqa: ANN001, ANN201
    """The table (and seconds); with ``load``, a CPU-bound process switches on and off."""
    busy = None
    if load:
        code = BUSY.format(on=toggle_s, off=toggle_s)
        busy = subprocess.Popen([sys.executable, "-c", code])
    try:
        backend = make_backend(params.latency.targets[target])
        t0 = time.perf_counter()
        res = build_latency_table(
            space, build_layer, supernet.extract, backend, params.latency, target, params.base.seed
        )
        return res, time.perf_counter() - t0
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def fig(m: dict) -> dict:
    sel = m.get("estimator_selection", {}).get("validation", {})
    meas = sel.get("measured", {})
    return {
        "lut_within_10pct": m["lut_within_10pct"],
        "lut_kendall_tau": round(m["lut_kendall_tau"], 3),
        "measured_within_10pct": meas.get("within_10pct"),
        "measured_kendall_tau": round(meas["kendall_tau"], 3) if meas else None,
        "noise": m["noise"],
        "noise_cv": round(m["noise_cv"], 4),
    }


SCENARIOS = {
    "ort-batch32": {"batch_size": 32},
    "ort-batch64": {"batch_size": 64},
    "ort-threads2": {"threads": 2},
    "torch-eager": {"backend": "torch"},
}


def scenario_kendall(supernet: Supernet, params: Params, target: str, n: int = 60) -> dict:
    """Kendall tau of per-image latency under each scenario vs ``target`` (batch 1), timed on
    the same ``n`` subnets with a short protocol (interleaved, robust estimator)."""
    from scipy import stats as sps

    from onceflow.config import LatencyTarget
    from onceflow.latency.table import sample_distinct

    space = supernet.space
    rng = np.random.default_rng(params.base.seed + 11)
    archs = sample_distinct(space, n, rng)
    base = params.latency.targets[target]
    short = params.latency.model_copy(
        update={
            "protocol": params.latency.protocol.model_copy(update={"repeats": 24, "sessions": 1})
        }
    )
    per_image = {}
    for name, change in {"base": {}, **SCENARIOS}.items():
        t = LatencyTarget(**{**base.model_dump(), **change})
        backend = make_backend(t)
        ok, _ = backend.available()
        if not ok:
            continue
        protocol = protocol_from_config(short, t, params.base.seed)
        b = t.batch_size
        models = [(supernet.extract(a).eval(), (b, space.in_channels, a.resolution, a.resolution))
                  for a in archs]  # fmt: skip
        wall, cpu = backend.sample_many(models, protocol)
        chosen = cpu if protocol.clock == "thread_cpu" else wall
        per_image[name] = np.array([LatencyStats.from_samples(r).median / b for r in chosen])
    return {
        name: round(float(sps.kendalltau(per_image["base"], v).statistic), 3)
        for name, v in per_image.items()
        if name != "base"
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--target", default="ort-cpu")
    ap.add_argument("--supernet", default="models/supernet")
    ap.add_argument("--records", default=None, help="also write per-subnet records (JSON) here")
    ap.add_argument("--measured-subnets", type=int, default=200, help="N for the curve's top")
    ap.add_argument("--toggle-s", type=float, default=10.0, help="competing load on/off period")
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
    tgt = params.latency.targets[args.target].model_copy(
        update={"estimator": "measured", "measured_subnets": args.measured_subnets}
    )
    params = params.model_copy(
        update={
            "latency": params.latency.model_copy(
                update={"targets": {**params.latency.targets, args.target: tgt}}
            )
        }
    )
    load_before = os.getloadavg()
    res, stage_seconds = build(space, supernet, params, args.target, False, args.toggle_s)
    loaded, loaded_seconds = build(space, supernet, params, args.target, True, args.toggle_s)
    load_after = os.getloadavg()
    est = LatencyEstimator(space, res.lut, res.calibration)
    package = package_over_estimator(supernet, est, params, args.target)
    curve = learning_curve(space, res.records)
    scenarios = scenario_kendall(supernet, params, args.target)
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
    at100 = curve.get("100", {}).get("arch", {})
    idle, load = fig(res.metrics), fig(loaded.metrics)
    out = {
        "target": args.target,
        "supernet": source,
        "estimator": m["estimator"],
        **{k: m[k] for k in keys},
        "measured_estimator_tau_at_100": at100.get("kendall_tau"),
        "measured_estimator_within_10pct_at_100": at100.get("within_10pct"),
        "measured_estimator_learning_curve": curve,
        "scenario_kendall": scenarios,
        "idle_within_10pct": idle["lut_within_10pct"],
        "loaded_within_10pct": load["lut_within_10pct"],
        "idle_kendall_tau": idle["lut_kendall_tau"],
        "loaded_kendall_tau": load["lut_kendall_tau"],
        "idle": idle,
        "loaded": load,
        "loadavg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "table_seconds": round(stage_seconds, 1),
        "loaded_table_seconds": round(loaded_seconds, 1),
        "estimator_archs_per_s": round(archs_per_second(est, space)),
        "protocol": {k: res.lut.meta["protocol"][k] for k in ("repeats", "prime", "sessions")},
        "package_over_estimator": package,
    }
    if args.records:
        Path(args.records).write_text(json.dumps(res.records, indent=1))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
