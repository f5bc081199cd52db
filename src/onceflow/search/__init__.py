"""Generic search engine over categorical spaces; knows nothing about networks.

A space is a list of categorical dimensions (:class:`CategoricalSpace`); objectives and
constraints are batch functions ``f(encoded (N, D) int64) -> (N,)``. Algorithms: NSGA-II
(pymoo) for Pareto fronts, a constrained evolution for one budget, random search as baseline.
"""

from onceflow.search.archive import Archive, Lookup
from onceflow.search.bounds import (
    Extremum,
    Range,
    check_budget,
    coordinate_descent,
    resolve_budget,
    value_range,
)
from onceflow.search.evolution import constrained_evolution, random_search
from onceflow.search.nsga import nsga2
from onceflow.search.pareto import accuracy_latency_hv, hypervolume, non_dominated
from onceflow.search.problem import Best, Counter, Front, Objective
from onceflow.search.space import BatchFn, CategoricalSpace, unique_rows
from onceflow.search.specialize import (
    Pick,
    Specialization,
    budgets_for,
    run_search,
    specialize,
)

__all__ = [
    "Archive",
    "Lookup",
    "BatchFn",
    "Best",
    "CategoricalSpace",
    "Counter",
    "Extremum",
    "Front",
    "Objective",
    "Pick",
    "Range",
    "accuracy_latency_hv",
    "budgets_for",
    "check_budget",
    "constrained_evolution",
    "coordinate_descent",
    "hypervolume",
    "non_dominated",
    "nsga2",
    "random_search",
    "resolve_budget",
    "run_search",
    "Specialization",
    "specialize",
    "unique_rows",
    "value_range",
]
