"""The ``search@<target>`` stage as one call (:func:`run`).

The adapter between the engine (``onceflow.search``, which knows nothing about networks and
imports no predictor) and one supernet, above both: it opens
the search space, the accuracy predictor and the target's latency estimator, runs
:func:`~onceflow.search.specialize.run_search` on their batch functions, measures the picks for
real when ``search.evaluate_selected`` asks, and returns what the stage writes. One describer
turns an encoded row into the arch (string and JSON) for the documents and the engine's errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onceflow.config import BudgetConfig, Params
from onceflow.data.prepared import load_prepared
from onceflow.io import write_json_atomic
from onceflow.latency import load_estimator
from onceflow.predictor import load_predictor
from onceflow.predictor.pipeline import subnet_accuracy
from onceflow.search import report
from onceflow.search.specialize import Specialization, budgets_for, run_search
from onceflow.supernet.supernet import load_space, load_supernet
from onceflow.threads import set_threads


@dataclass(frozen=True)
class SearchOutputs:
    """One target's search: the documents (``save``: search/<T>/), metrics, the Pareto plot
    (PNG bytes) and its data (CSV text)."""

    target: str
    budgets: BudgetConfig
    result: Specialization
    describe: report.Describe
    real_accuracy: list[float] | None  # the picks measured on the supernet, if evaluated
    plot_png: bytes

    def save(self, directory: Path) -> None:
        """pareto.json (the front) and selected.json (one arch per budget)."""
        r, t, describe = self.result, self.target, self.describe
        write_json_atomic(directory / "pareto.json", report.pareto_doc(r, t, describe))
        write_json_atomic(
            directory / "selected.json", report.selected_doc(r, t, self.budgets, describe)
        )

    @property
    def headline(self) -> dict[str, Any]:
        return report.search_metrics(self.result, self.target, self.real_accuracy)

    @property
    def details(self) -> dict[str, Any]:
        return report.search_details(self.result, self.target, self.real_accuracy)

    @property
    def plot_csv(self) -> str:
        return report.plot_rows(self.result)

    @property
    def summary(self) -> str:
        r = self.result
        return f"search@{self.target}: front {len(r.front.x)}, hv {r.hypervolume:.4f}"


@dataclass(frozen=True)
class Paths:
    """Where ``search@<target>`` reads."""

    target: str
    supernet: str
    data: str
    predictor: str
    latency: str


def run(params: Params, paths: Paths) -> SearchOutputs:
    """Search the target's budgets with the predictor in ``paths.predictor`` and the estimator
    in ``paths.latency``; the supernet's weights and the data are read only to measure the
    picks."""
    target = paths.target
    cfg, seed = params.search, params.base.seed
    budgets = budgets_for(cfg, params.latency.targets, target)
    set_threads(params.base.threads)
    space = load_space(paths.supernet)
    pred, est = load_predictor(paths.predictor, space), load_estimator(paths.latency, space)
    enc = pred.encoder
    describe = report.arch_describer(space.decode)
    result = run_search(
        space.dimensions(), cfg, budgets, pred.predict, est.predict, seed=seed,
        canonicalize=enc.canonicalize, extra={"macs": enc.macs, "params": enc.params},
        describe=lambda x: describe(x)[0],
    )  # fmt: skip
    real = None
    if cfg.evaluate_selected:  # close the loop: BN recalibrated, val subset as in the dataset
        accuracy = subnet_accuracy(
            load_supernet(paths.supernet), load_prepared(paths.data), params.predictor, seed
        )
        real = [accuracy(space.decode(p.x)) for p in result.picks]
    png = report.pareto_png(result, f"search@{target}", real)
    return SearchOutputs(target, budgets, result, describe, real, png)
