"""Benchmark of the predictor-guided search. Prints one JSON object.

* ``evals_per_s``: candidates per second through the accuracy predictor plus the latency
  estimator, on batches of 100k encoded archs, one thread.
* per budget (fractions 0.25 / 0.5 / 0.75 of the reachable latency range): the best predicted
  accuracy the constrained evolution finds within 10 s (everything included) versus the best of
  1,000,000 random feasible samples; ``gap_to_random_1m_pp`` = random - search in accuracy
  points (negative: the search found better).
* NSGA-II (the stage's default settings) hypervolume relative to the front of every random
  sample drawn (millions: "dense sampling"), same reference point.
* ``forest_vs_sklearn``: the boosted trees' predict (rows/s) by onceflow's Forest and by
  sklearn's ``predict`` at the batch sizes the search uses (evolution broods ~25, NSGA-II
  offspring ~100, a polish sweep ~100, the random baseline 20,000, this benchmark 100,000).
* ``budgeted`` (``--budgeted``): the search under an evaluation budget on eight landscapes
  (``search_landscapes.py``) at 10-75% feasible and 200/500/1000 distinct evaluations, 5 seeds:
  constrained evolution's median regret vs feasible (and plain) uniform random sampling, and
  onceflow's NSGA-II vs a plain pymoo NSGA-II call (hypervolume); summarized by
  ``worst_feasible_regret_margin_pp`` (goal <= 0), ``worst_hv_margin`` (goal >= 0) and
  ``min_spend_fraction`` (goal >= 0.98, of the budget or of the feasible rows if fewer).

The random baseline is uniform (each dimension independently uniform: at a million draws in a
space of ~1e20, repeats are negligible); the dense front also takes spread draws, which reach
the small and large ends of the space that uniform draws miss.

With ``--supernet/--predictor/--latency`` pointing at real pipeline outputs it benchmarks those;
otherwise a realistic synthetic setting of params.yaml's search space (33 dimensions): a latency
table proportional to each layer's MACs, and a predictor selected and fitted exactly as the
predictor stage does on 250 spread samples of a smooth synthetic accuracy function.

* ``contention`` (issue 29): one default search, one predictor fit and the predictor stage's
  measurement loop, each idle and while one CPU-bound process per core competes, in this same
  invocation (``benchmarks/contention.py``); ``search_loaded_over_idle`` (goal <= 2.0),
  ``fit_loaded_over_idle``, ``measure_loaded_over_idle``, and the search and fit as before the
  fix (pools at ``base.threads`` around small batches) beside them.

Thread pools: the process runs at one thread (``set_threads(1)``) for the throughput figures;
the contention section sets ``base.threads`` as a stage does.

Usage: python benchmarks/bench_search.py [--random 1000000] [--budgeted-only [--landscape-seed K
       --run-seeds S.. --landscapes L.. --evaluations N.. --percentiles P.. --parts P..]]
       [--contention-only] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onceflow.config import EvolutionConfig, PredictorConfig, SupernetConfig, load_params  # noqa: E402
from onceflow.latency import LatencyEstimator, load_estimator  # noqa: E402
from onceflow.latency.lut import Lut  # noqa: E402
from onceflow.latency.protocol import LatencyStats  # noqa: E402
from onceflow.predictor import AccuracyPredictor, ArchEncoder, load_predictor  # noqa: E402
from onceflow.predictor.encoding import layer_macs  # noqa: E402
from onceflow.predictor.fit import select_and_fit  # noqa: E402
from onceflow.predictor.models import MODEL_KINDS, make_model  # noqa: E402
from onceflow.search import (  # noqa: E402
    CategoricalSpace,
    Objective,
    constrained_evolution,
    coordinate_descent,
    non_dominated,
    nsga2,
    value_range,
)
from onceflow.search.specialize import front_hypervolume  # noqa: E402
from onceflow.supernet import SearchSpace  # noqa: E402
from onceflow.supernet.supernet import SPACE_FILE  # noqa: E402
from onceflow.threads import set_threads  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from contention import loaded_over_idle, spin, unlimited  # noqa: E402
from search_landscapes import run_budgeted  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75)


def synthetic_setting(
    supernet: SupernetConfig, cfg: PredictorConfig, seed: int
) -> tuple[SearchSpace, AccuracyPredictor, LatencyEstimator]:
    space = SearchSpace(supernet, in_channels=1, n_classes=10, image_size=28)
    lut = Lut(
        {
            s: LatencyStats.from_samples([0.02 + 2e-7 * layer_macs(s)])
            for s in space.unique_layer_specs()
        },
        LatencyStats.from_samples([0.01]),
    )
    est = LatencyEstimator(space, lut)
    enc = ArchEncoder(space, per_resolution=cfg.per_resolution_features)
    cs = CategoricalSpace.from_dimensions(space.dimensions(), enc.canonicalize)
    rng = np.random.default_rng(seed)
    x = np.concatenate([cs.extremes(), cs.sample_spread(rng, 248)])
    # Saturating in log MACs, plus small per-choice effects and measurement noise.
    lm = np.log10(enc.macs(x))
    mid, span = (lm[0] + lm[1]) / 2, lm[1] - lm[0]  # rows 0 and 1: smallest and largest
    w = np.random.default_rng(seed + 1).normal(0, 0.002, enc.n_onehot)
    y = 0.80 + 0.12 / (1 + np.exp(-(lm - mid) / (span / 6))) + enc.onehot(x) @ w
    y = y + rng.normal(0, 0.002, len(y))
    model, _ = select_and_fit(
        enc.features(x),
        y,
        cfg.models,
        p=cfg,
        seed=seed,
    )
    return space, AccuracyPredictor(enc, model), est


def rate(fn, x: np.ndarray, repeats: int = 3) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def _replay(enc: ArchEncoder, forest, est, xb: np.ndarray) -> dict:  # noqa: ANN001
    """Total predict time of the Forest and of sklearn over the batches one default
    ``specialize`` run (the stage's settings, shorter time limits) asks the predictor for."""
    from onceflow.search import run_search

    sizes: list[int] = []

    def acc(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return forest.predict(enc.features(x))

    params = load_params("params.yaml")
    cfg = params.search.model_copy(
        update={
            "nsga": params.search.nsga.model_copy(update={"time_limit_s": 20.0}),
            "evolution": params.search.evolution.model_copy(update={"time_limit_s": 5.0}),
        }
    )
    lat = lambda x: enc.macs(x) / 1e6  # noqa: E731 (a stand-in latency: the sizes are what count)
    run_search(enc._space.dimensions(), cfg, cfg.default_budgets, acc, lat, seed=0,
               canonicalize=enc.canonicalize)  # fmt: skip
    t = {"forest": 0.0, "sklearn": 0.0}
    for n in sizes:
        F = enc.features(xb[:n])
        for name, fn in (("forest", forest.predict), ("sklearn", est.predict)):
            t0 = time.perf_counter()
            fn(F)
            t[name] += time.perf_counter() - t0
    return {
        "calls": len(sizes),
        "rows": int(sum(sizes)),
        "median_batch": int(np.median(sizes)),
        "forest_seconds": round(t["forest"], 3),
        "sklearn_seconds": round(t["sklearn"], 3),
        "speedup": round(t["sklearn"] / t["forest"], 2),
    }


def forest_vs_sklearn(enc: ArchEncoder, pred: AccuracyPredictor, xb: np.ndarray) -> dict:
    """GBM rows/s through onceflow's Forest and through sklearn's predict, per batch size."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    from onceflow.predictor.forest import Forest

    p = load_params("params.yaml").predictor
    X = enc.features(xb[:300])
    est = HistGradientBoostingRegressor(
        max_iter=p.gbm_iterations,
        learning_rate=p.gbm_learning_rate,
        max_leaf_nodes=p.gbm_max_leaf_nodes,
        min_samples_leaf=p.gbm_min_samples_leaf,
        early_stopping=False,
        random_state=0,
    ).fit(X, pred.predict(xb[:300]))
    forest = Forest.from_sklearn(est)
    out: dict = {"replay_of_search": _replay(enc, forest, est, xb)}
    for n in (25, 100, 1000, 20_000, 100_000):
        F = enc.features(xb[:n])
        reps = max(1, 20_000 // n)
        ours = rate(lambda f, r=reps: [forest.predict(f) for _ in range(r)], F) * reps
        theirs = rate(lambda f, r=reps: [est.predict(f) for _ in range(r)], F) * reps
        out[str(n)] = {
            "forest_rows_per_s": round(ours),
            "sklearn_rows_per_s": round(theirs),
            "speedup": round(ours / theirs, 2),
        }
    return out


def _synthetic_data(n_train: int, n_val: int, seed: int):  # noqa: ANN202
    """Random 28x28 grayscale images with labels: what a measurement costs does not depend on
    what the pixels show."""
    from onceflow.data.prepared import Meta, PreparedData, Split

    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        return Split(rng.integers(0, 256, (n, 28, 28, 1), np.uint8), rng.integers(0, 10, n))

    meta = Meta(tuple(str(i) for i in range(10)), 28, 28, 1, (0.5,), (0.25,), "synthetic",
                {"train": n_train, "val": n_val, "test": 10})  # fmt: skip
    return PreparedData(split(n_train), split(n_val), split(10), meta)


def contention(params, space: SearchSpace, pred: AccuracyPredictor, est, rounds: int) -> dict:  # noqa: ANN001
    """Loaded/idle of one default search, one predictor fit and the predictor stage's
    measurement loop, each with the process's pools at ``base.threads`` (as a stage sets
    them); the search and the fit also as before issue 29 (no per-loop limit)."""
    from onceflow.predictor.fit import select_and_fit
    from onceflow.predictor.pipeline import measure_settings, measure_subnets
    from onceflow.search import run_search
    from onceflow.supernet.supernet import Supernet

    threads = params.base.threads
    set_threads(threads)
    cfg, enc = params.search, pred.encoder
    load = os.getloadavg()[0]

    def search() -> None:
        run_search(space.dimensions(), cfg, cfg.default_budgets, pred.predict, est.predict,
                   seed=0, canonicalize=enc.canonicalize)  # fmt: skip

    cs = CategoricalSpace.from_dimensions(space.dimensions(), enc.canonicalize)
    xs = cs.sample_spread(np.random.default_rng(1), params.predictor.n_samples)
    X, y = enc.features(xs), pred.predict(xs)
    pc = params.predictor.model_copy(update={"k_folds": 2})

    def fit() -> None:
        select_and_fit(X, y, pc.models, p=pc, seed=0)

    torch.manual_seed(0)
    net = Supernet(space)
    data = _synthetic_data(2000, 1000, 0)
    settings = measure_settings(params.predictor.model_copy(update={"calib_images": 500}), 0)
    archs = [space.sample(np.random.default_rng(i)) for i in range(2 * threads + 2)]

    def measure() -> None:
        with tempfile.TemporaryDirectory() as d:
            measure_subnets(net, data, archs, settings=settings, dataset_csv=f"{d}/rows.csv",
                            context="bench", workers=threads, retest=0)  # fmt: skip

    out: dict = {"threads": threads, "cores": os.cpu_count(), "load_before": round(load, 2)}
    out["reference"] = loaded_over_idle(spin, rounds)
    out["search"] = loaded_over_idle(search, rounds)
    with unlimited("onceflow.search.specialize"):
        out["search_before_fix"] = loaded_over_idle(search, rounds)
    out["predictor_fit"] = loaded_over_idle(fit, rounds)
    with unlimited("onceflow.predictor.fit"):
        out["predictor_fit_before_fix"] = loaded_over_idle(fit, rounds)
    out["predictor_measure"] = loaded_over_idle(measure, rounds)
    out["search_loaded_over_idle"] = out["search"]["loaded_over_idle"]
    out["fit_loaded_over_idle"] = out["predictor_fit"]["loaded_over_idle"]
    out["measure_loaded_over_idle"] = out["predictor_measure"]["loaded_over_idle"]
    out["reference_loaded_over_idle"] = out["reference"]["loaded_over_idle"]
    out["search_idle_after_over_before"] = round(
        out["search"]["idle_s"] / out["search_before_fix"]["idle_s"], 2
    )
    out["load_after"] = round(os.getloadavg()[0], 2)
    set_threads(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--supernet", type=Path)
    ap.add_argument("--predictor", type=Path)
    ap.add_argument("--latency", type=Path)
    ap.add_argument("--random", type=int, default=1_000_000, help="random feasible per budget")
    ap.add_argument("--time-limit", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="params.yaml", help="its supernet section: the space")
    ap.add_argument(
        "--budgeted-only",
        "--budgeted",
        dest="budgeted_only",
        action="store_true",
        help="only the budgeted section",
    )
    ap.add_argument("--skip-budgeted", action="store_true", help="all but the budgeted section")
    ap.add_argument("--contention-only", action="store_true", help="only loaded/idle timings")
    ap.add_argument("--rounds", type=int, default=2, help="idle/loaded rounds per workload")
    ap.add_argument(
        "--landscape-seed",
        type=int,
        default=1,
        help="budgeted landscapes' instance (0: the set the settings were fixed on)",
    )
    ap.add_argument("--landscapes", nargs="*", help="budgeted: only these landscapes")
    ap.add_argument("--run-seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                    help="budgeted: the runs' seeds (5 per cell)")  # fmt: skip
    ap.add_argument("--evaluations", type=int, nargs="*", default=[200, 500, 1000],
                    help="budgeted: the budgets N")  # fmt: skip
    ap.add_argument("--percentiles", type=int, nargs="*", default=[10, 25, 50, 75],
                    help="budgeted: the constraint's percentiles (share feasible)")  # fmt: skip
    ap.add_argument("--parts", nargs="*", default=["evolution", "nsga"],
                    choices=["evolution", "nsga"], help="budgeted: which comparisons")  # fmt: skip
    ap.add_argument("--evolution-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="budgeted: evolution settings other than the schema's")  # fmt: skip
    ap.add_argument("--nsga-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="budgeted: search.nsga settings other than the schema's")  # fmt: skip
    args = ap.parse_args()
    budgeted_args = {
        "nsga": {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.nsga_set)},
        "evolution": {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.evolution_set)},
        "landscape_seed": args.landscape_seed,
        "names": args.landscapes,
        "seeds": tuple(args.run_seeds),
        "evaluations": tuple(args.evaluations),
        "percentiles": tuple(args.percentiles),
        "parts": tuple(args.parts),
    }
    set_threads(1)
    if args.budgeted_only:
        budgeted = run_budgeted(**budgeted_args)
        json.dump({"budgeted": budgeted}, sys.stdout, indent=2)
        print()
        return

    params = load_params(args.params)
    real = all(p is not None and p.exists() for p in (args.supernet, args.predictor, args.latency))
    if real:
        space = SearchSpace.from_json(json.loads((args.supernet / SPACE_FILE).read_text()))
        pred, est = load_predictor(args.predictor, space), load_estimator(args.latency, space)
    else:
        space, pred, est = synthetic_setting(params.supernet, params.predictor, args.seed)
    if args.contention_only:
        json.dump({"contention": contention(params, space, pred, est, args.rounds)}, sys.stdout,
                  indent=2)  # fmt: skip
        print()
        return
    enc = pred.encoder
    cs = CategoricalSpace.from_dimensions(space.dimensions(), enc.canonicalize)
    rng = np.random.default_rng(args.seed)

    def both(x: np.ndarray) -> None:
        pred.predict(x)
        est.predict(x)

    xb = cs.sample_spread(rng, 100_000)
    by_model = {}
    for kind in MODEL_KINDS:
        m = make_model(kind, params.predictor).fit(enc.features(xb[:300]), pred.predict(xb[:300]))
        other = AccuracyPredictor(enc, m)
        by_model[kind] = round(rate(lambda x, o=other: (o.predict(x), est.predict(x)), xb, 2))  # noqa: E731

    out: dict = {
        "artifacts": "real"
        if real
        else "synthetic (params.yaml space, MACs-proportional LUT, fitted predictor)",
        "space_dims": cs.n_dims,
        "space_size": float(space.size()),
        "predictor_model": pred.kind,
        "evals_per_s": round(rate(both, xb)),
        "evals_per_s_by_model": by_model,
        "predictor_only_per_s": round(rate(pred.predict, xb)),
        "latency_only_per_s": round(rate(est.predict, xb)),
    }

    # Constrained evolution per budget, all of its work inside the time limit.
    lat_range = value_range(cs, est.predict, np.random.default_rng(args.seed))
    budgets = []
    for f in FRACTIONS:
        b = lat_range.low.value + f * lat_range.span
        t0 = time.perf_counter()
        low = coordinate_descent(cs, est.predict, cs.extremes())
        left = args.time_limit - (time.perf_counter() - t0)
        best = constrained_evolution(
            cs,
            pred.predict,
            est.predict,
            b,
            EvolutionConfig(generations=100_000, time_limit_s=max(left - 0.5, 0.1)),
            seed=args.seed,
            initial=low.x[None],
        )
        budgets.append(
            {
                "fraction": f,
                "budget_ms": b,
                "search_best": best.fitness,
                "search_latency_ms": best.constraint,
                "search_seconds": round(time.perf_counter() - t0, 2),
                "search_evaluations": best.n_evaluations,
                "search_generations": best.generations,
            }
        )

    # Random baseline: draw spread samples until every budget has `--random` feasible ones
    # (bounded by 40x that many draws); the front of every draw is the dense reference.
    need = args.random
    feasible = np.zeros(len(FRACTIONS), np.int64)
    rbest = np.full(len(FRACTIONS), -np.inf)
    bvals = np.array([b["budget_ms"] for b in budgets])
    front = np.zeros((0, 2))
    draws, t0 = 0, time.perf_counter()
    while feasible.min() < need and draws < 40 * need:
        x = cs.sample(rng, 200_000)
        draws += len(x)
        a, la = pred.predict(x), est.predict(x)
        for i, b in enumerate(bvals):
            ok = np.flatnonzero(la <= b)[: max(need - feasible[i], 0)]
            feasible[i] += len(ok)
            if len(ok):
                rbest[i] = max(rbest[i], a[ok].max())
        xs = cs.sample_spread(rng, 200_000)  # the dense front only
        F = np.concatenate(
            [front, np.stack([-a, la], 1), np.stack([-pred.predict(xs), est.predict(xs)], 1)]
        )
        front = F[non_dominated(F)]
    for i, b in enumerate(budgets):
        b.update(
            {
                "random_1m_best": float(rbest[i]),
                "random_feasible": int(feasible[i]),
                "gap_to_random_1m_pp": round(100 * (rbest[i] - b["search_best"]), 4),
            }
        )
    out["budgets"] = budgets
    out["random_draws"] = draws
    out["random_seconds"] = round(time.perf_counter() - t0, 1)

    acc_ref = float(pred.predict(lat_range.low.x[None])[0])
    fr = nsga2(
        cs,
        [Objective("accuracy", pred.predict, True), Objective("latency", est.predict)],
        params.search.nsga,
        seed=args.seed,
        initial=np.stack([lat_range.low.x, lat_range.high.x]),
    )
    f2 = non_dominated(np.stack([-fr.values["accuracy"], fr.values["latency"]], 1))
    hv = front_hypervolume(fr.values["accuracy"][f2], fr.values["latency"][f2], lat_range, acc_ref)
    hv_dense = front_hypervolume(-front[:, 0], front[:, 1], lat_range, acc_ref)
    out["nsga"] = {
        "hypervolume": hv,
        "dense_hypervolume": hv_dense,
        "hv_ratio": hv / hv_dense,
        "front_size": int(len(f2)),
        "dense_front_size": int(len(front)),
        "evaluations": fr.n_evaluations,
        "seconds": round(fr.seconds, 2),
        "dense_samples": draws,
    }
    out["forest_vs_sklearn"] = forest_vs_sklearn(enc, pred, xb)
    out["contention"] = contention(params, space, pred, est, args.rounds)
    for k in ("search_loaded_over_idle", "fit_loaded_over_idle", "measure_loaded_over_idle"):
        out[k] = out["contention"][k]
    if not args.skip_budgeted:
        out["budgeted"] = run_budgeted(**budgeted_args)
    out["threads"] = torch.get_num_threads()
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
