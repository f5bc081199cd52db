"""Rugged synthetic landscapes for the search under an evaluation budget (bench_search.py's
``budgeted`` section), and the runs that score it.

Each landscape is a small categorical space (enumerable: the exact constrained optimum is known),
a fitness in accuracy units (regret is reported in accuracy points) and a cheap constraint. They
are built to be hard in the ways real spaces are, not to suit one algorithm; their constants
were fixed before the algorithms were scored and are not tuned:

* ``trap``: 3 groups of 3 ordered dimensions, each a deceptive trap (the group's value rises as
  its indices fall, except at all-largest, the global optimum), fitness floored to 0.25-point
  plateaus; cost additive in the indices. Gradient-following is led away from the optimum.
* ``nk``: an NK landscape (N=8, K=2) over unordered choices: each dimension's contribution is a
  random table of itself and its two neighbours; costs are random per choice, partly tied to the
  choice's mean contribution (a trade-off). Epistatic, with no order to exploit.
* ``nas``: NAS-like: accuracy saturating in a size that grows with the (ordered) indices, with
  random per-choice effects, random pairwise interactions and 0.1-point plateaus; latency
  additive in the size with per-choice overheads. The optimum sits on the budget's boundary.

Budgets are the 25th / 50th / 75th percentiles of the constraint over the whole space (a tight
to a loose feasible region).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onceflow.config import EvolutionConfig
from onceflow.search import (
    Archive,
    CategoricalSpace,
    Objective,
    constrained_evolution,
    non_dominated,
    nsga2,
    random_search,
)
from onceflow.search.pareto import hypervolume

Fn = Callable[[np.ndarray], np.ndarray]
PERCENTILES = (25, 50, 75)


@dataclass(frozen=True)
class Landscape:
    name: str
    space: CategoricalSpace
    fitness: Fn
    cost: Fn


def trap() -> Landscape:
    card = (4,) * 9
    w = np.random.default_rng(101).uniform(0.5, 1.5, 9)

    def fitness(x: np.ndarray) -> np.ndarray:
        u = x.reshape(len(x), 3, 3).sum(2) / 9.0  # per group, 0..1
        g = np.where(u >= 1.0, 1.0, 0.8 * (1.0 - u))
        f = 0.70 + 0.20 * g.mean(1)
        return np.floor(f * 400.0) / 400.0

    def cost(x: np.ndarray) -> np.ndarray:
        return 1.0 + x @ w

    return Landscape(
        "trap", CategoricalSpace(tuple(f"t{i}" for i in range(9)), card), fitness, cost
    )


def nk() -> Landscape:
    n, k, c = 8, 2, 5
    rng = np.random.default_rng(202)
    tables = rng.random((n, c, c, c))
    nbr = np.array([[(d + j) % n for j in range(k + 1)] for d in range(n)])
    marginal = tables.mean(axis=(2, 3))  # (n, c) mean contribution of each choice
    costs = 0.5 * rng.random((n, c)) + 0.5 * marginal

    def fitness(x: np.ndarray) -> np.ndarray:
        xs = x[:, nbr]  # (N, n, k+1)
        vals = tables[np.arange(n), xs[:, :, 0], xs[:, :, 1], xs[:, :, 2]]
        return 0.70 + 0.20 * vals.mean(1)

    def cost(x: np.ndarray) -> np.ndarray:
        return costs[np.arange(n), x].sum(1)

    return Landscape(
        "nk", CategoricalSpace(tuple(f"n{i}" for i in range(n)), (c,) * n), fitness, cost
    )


def nas() -> Landscape:
    card = (3, 3, 4, 4, 3, 3, 4, 4, 2, 3)
    d = len(card)
    rng = np.random.default_rng(303)
    a = rng.uniform(0.5, 2.0, d)  # size per index step
    b = a * rng.lognormal(0.0, 0.3, d)  # latency per index step, correlated with size
    eff = [rng.normal(0.0, 0.004, m) for m in card]
    over = [rng.uniform(0.0, 0.3, m) for m in card]
    pairs = [tuple(rng.choice(d, 2, replace=False)) for _ in range(6)]
    inter = [rng.normal(0.0, 0.004, (card[i], card[j])) for i, j in pairs]
    s0 = float(np.dot(a, np.array(card) - 1)) / 3.0

    def fitness(x: np.ndarray) -> np.ndarray:
        s = x @ a
        f = 0.92 - 0.25 * np.exp(-s / s0)
        for i in range(d):
            f = f + eff[i][x[:, i]]
        for (i, j), t in zip(pairs, inter, strict=True):
            f = f + t[x[:, i], x[:, j]]
        return np.floor(f * 1000.0) / 1000.0

    def cost(x: np.ndarray) -> np.ndarray:
        lat = 0.5 + x @ b
        for i in range(d):
            lat = lat + over[i][x[:, i]]
        return lat

    return Landscape("nas", CategoricalSpace(tuple(f"a{i}" for i in range(d)), card), fitness, cost)


LANDSCAPES = (trap, nk, nas)


class _Distinct:
    """A problem wrapper for plain pymoo: records distinct rows in order until ``cap``."""

    def __init__(self, ls: Landscape, cap: int) -> None:
        self.ls, self.cap = ls, cap
        self.seen: dict[bytes, tuple[float, float]] = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.round(x).astype(np.int64)
        f, c = self.ls.fitness(x), self.ls.cost(x)
        for row, fi, ci in zip(x, f, c, strict=True):
            k = row.tobytes()
            if k not in self.seen and len(self.seen) < self.cap:
                self.seen[k] = (float(fi), float(ci))
        return np.stack([-f, c], 1)


def pymoo_nsga2_front(ls: Landscape, n_evals: int, seed: int, pop_size: int) -> np.ndarray:
    """(fitness, cost) of the first ``n_evals`` distinct candidates a plain pymoo NSGA-II call
    evaluates (pymoo's documented recipe for integer variables: integer random sampling, SBX and
    polynomial mutation with rounding, duplicates eliminated)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.core.termination import Termination
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    rec = _Distinct(ls, n_evals)
    card = ls.space.card

    class P(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=len(card), n_obj=2, xl=0, xu=card - 1, vtype=int)

        def _evaluate(self, x: np.ndarray, out: dict, *a: object, **k: object) -> None:
            out["F"] = rec(x)

    class Enough(Termination):
        def _update(self, algorithm: object) -> float:
            return len(rec.seen) / n_evals

    algo = NSGA2(
        pop_size=pop_size,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    minimize(P(), algo, Enough(), seed=seed, verbose=False)
    return np.array(list(rec.seen.values()))


def _hv(fit: np.ndarray, cost: np.ndarray, ref: tuple[float, float, float, float]) -> float:
    """Normalized hypervolume (fitness up, cost down) in the box [fmin, fmax] x [cmin, cmax]."""
    fmin, fmax, cmin, cmax = ref
    F = np.stack([(fmax - fit) / (fmax - fmin), (cost - cmin) / (cmax - cmin)], 1)
    return hypervolume(F, np.array([1.0, 1.0]))


def run_budgeted(
    evaluations: tuple[int, ...] = (200, 500, 1000),
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    nsga_pop: int = 100,
) -> dict:
    """Every figure of the budgeted section, and its summary margins."""
    t0 = time.perf_counter()
    out: dict = {"evaluations": list(evaluations), "seeds": len(seeds), "landscapes": {}}
    worst_regret, worst_hv = -np.inf, np.inf
    for make in LANDSCAPES:
        ls = make()
        allx = ls.space.enumerate_all()
        fa, ca = ls.fitness(allx), ls.cost(allx)
        ref = (float(fa.min()), float(fa.max()), float(ca.min()), float(ca.max()))
        F = np.stack([-fa, ca], 1)
        exact_hv = _hv(fa[non_dominated(F)], ca[non_dominated(F)], ref)
        doc: dict = {"space_size": len(allx), "exact_hv": round(exact_hv, 4), "budgets": {}}
        for pct in PERCENTILES:
            b = float(np.percentile(ca, pct))
            opt = float(fa[ca <= b].max())
            rows = {}
            for n in evaluations:
                reg_e, reg_r, ev_n = [], [], []
                for s in seeds:
                    p = EvolutionConfig(max_evaluations=n, generations=10**6, time_limit_s=600.0)
                    e = constrained_evolution(ls.space, ls.fitness, ls.cost, b, p, seed=s)
                    r = random_search(
                        ls.space, ls.fitness, ls.cost, b, n, seed=s, feasible_only=True
                    )
                    reg_e.append(100 * (opt - (e.fitness if e.x is not None else fa.min())))
                    reg_r.append(100 * (opt - (r.fitness if r.x is not None else fa.min())))
                    ev_n.append(e.n_evaluations)
                margin = float(np.mean(reg_e) - np.mean(reg_r))
                worst_regret = max(worst_regret, margin)
                rows[str(n)] = {
                    "evolution_regret_pp": round(float(np.mean(reg_e)), 4),
                    "random_regret_pp": round(float(np.mean(reg_r)), 4),
                    "margin_pp": round(margin, 4),
                    "evolution_regret_by_seed": [round(v, 3) for v in reg_e],
                    "random_regret_by_seed": [round(v, 3) for v in reg_r],
                    "evolution_evaluations": ev_n,
                }
            doc["budgets"][f"p{pct}"] = {
                "budget": round(b, 4),
                "feasible_share": round(float((ca <= b).mean()), 4),
                "optimum": opt,
                "by_evaluations": rows,
            }
        hvs = {}
        for n in evaluations:
            ours, theirs, small, ev_n = [], [], [], []
            for s in seeds:
                archive = Archive({"fitness": ls.fitness, "cost": ls.cost})
                fr = nsga2(
                    ls.space,
                    [Objective("fitness", ls.fitness, True), Objective("cost", ls.cost)],
                    pop_size=nsga_pop,
                    generations=10**6,
                    seed=s,
                    max_evaluations=n,
                    archive=archive,
                )
                ours.append(_hv(fr.values["fitness"], fr.values["cost"], ref))
                ev_n.append(archive.n)
                pm = pymoo_nsga2_front(ls, n, s, nsga_pop)
                theirs.append(_hv(pm[:, 0], pm[:, 1], ref))
                # pymoo at onceflow's budgeted population size too (not in the margin).
                pm = pymoo_nsga2_front(ls, n, s, max(16, n // 60))
                small.append(_hv(pm[:, 0], pm[:, 1], ref))
            margin = float(np.mean(ours) - np.mean(theirs))
            worst_hv = min(worst_hv, margin)
            hvs[str(n)] = {
                "onceflow_hv": round(float(np.mean(ours)), 4),
                "pymoo_hv": round(float(np.mean(theirs)), 4),
                "margin": round(margin, 4),
                "pymoo_hv_same_pop": round(float(np.mean(small)), 4),
                "onceflow_by_seed": [round(v, 4) for v in ours],
                "pymoo_by_seed": [round(v, 4) for v in theirs],
                "onceflow_evaluations": ev_n,
            }
        doc["nsga_hv"] = hvs
        out["landscapes"][ls.name] = doc
    out["worst_regret_margin_pp"] = round(float(worst_regret), 4)
    out["worst_hv_margin"] = round(float(worst_hv), 4)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
