"""The search archive: each distinct row evaluated once, lookups answered from it, the budget
counted in distinct rows. Hand-made rows and counting functions, exact expectations (targets of
`make mutation` on search/archive.py)."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.errors import ConfigError
from onceflow.search.archive import Archive, Lookup


class Counting:
    """f(row) = 10 * row[0] + row[1]; remembers every batch it was called with."""

    def __init__(self) -> None:
        self.calls: list[list[list[int]]] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.tolist())
        return 10.0 * x[:, 0] + x[:, 1]


def rows(*r: tuple[int, int]) -> np.ndarray:
    return np.asarray(r, np.int64)


def test_construction_rules() -> None:
    with pytest.raises(ConfigError) as err:
        Archive({})
    assert str(err.value) == "archive: need at least one function to evaluate"
    for bad in (0, -3):
        with pytest.raises(ConfigError) as err:
            Archive({"f": Counting()}, max_evaluations=bad)
        assert str(err.value) == f"max_evaluations must be >= 1 (got {bad})"
    a = Archive({"f": Counting()}, max_evaluations=1)
    assert (a.n, a.rows, a.remaining, a.exhausted, a.max_evaluations) == (0, 0, 1.0, False, 1)
    unbounded = Archive({"f": Counting()})
    assert unbounded.remaining == float("inf") and not unbounded.exhausted
    assert unbounded.x.shape == (0, 0) and unbounded.x.dtype == np.int64
    assert unbounded.value("f").shape == (0,)


def test_each_distinct_row_is_evaluated_once_in_first_seen_order() -> None:
    f = Counting()
    a = Archive({"f": f, "g": lambda x: -(10.0 * x[:, 0] + x[:, 1])})
    got = a.evaluate(rows((1, 2), (3, 4), (1, 2)))
    assert isinstance(got, Lookup) and got.ok.tolist() == [True, True, True]
    assert got["f"].tolist() == [12.0, 34.0, 12.0] and got["g"].tolist() == [-12.0, -34.0, -12.0]
    assert f.calls == [[[1, 2], [3, 4]]]
    again = a.evaluate(rows((3, 4), (5, 6)))
    assert again["f"].tolist() == [34.0, 56.0]
    assert f.calls[1] == [[5, 6]]
    assert (a.n, a.rows) == (3, 5)
    assert a.x.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert a.value("f").tolist() == [12.0, 34.0, 56.0]
    assert a.contains(rows((5, 6), (7, 8), (1, 2))).tolist() == [True, False, True]
    assert a.novel(rows((7, 8), (1, 2), (7, 8), (9, 9))).tolist() == [[7, 8], [9, 9]]
    assert a.novel(rows((1, 2))).shape == (0, 2)
    a.evaluate(np.asarray([7, 8]))  # one row, 1-D
    assert a.x.tolist()[-1] == [7, 8] and a.rows == 6


def test_the_budget_counts_distinct_rows_and_leaves_the_rest_nan() -> None:
    f = Counting()
    a = Archive({"f": f}, max_evaluations=3)
    got = a.evaluate(rows((1, 1), (2, 2), (1, 1), (3, 3), (4, 4), (2, 2)))
    assert got.ok.tolist() == [True, True, True, True, False, True]
    assert np.isnan(got["f"][4]) and got["f"][[0, 1, 3]].tolist() == [11.0, 22.0, 33.0]
    assert (a.n, a.remaining, a.exhausted) == (3, 0, True)
    late = a.evaluate(rows((4, 4), (1, 1)))
    assert late.ok.tolist() == [False, True] and np.isnan(late["f"][0])
    assert len(f.calls) == 1


def test_a_per_call_limit() -> None:
    f = Counting()
    a = Archive({"f": f}, max_evaluations=10)
    got = a.evaluate(rows((1, 1), (2, 2), (3, 3)), limit=2)
    assert got.ok.tolist() == [True, True, False]
    assert a.n == 2 and a.remaining == 8
    assert a.evaluate(rows((3, 3)), limit=0).ok.tolist() == [False]
    h = a.fn("f", limit=1)
    assert np.isnan(h(rows((4, 4), (5, 5)))[1]) and a.n == 3
    assert a.fn("f")(rows((5, 5), (1, 1))).tolist() == [55.0, 11.0]
    unbounded = Archive({"f": Counting()})
    assert unbounded.evaluate(rows((1, 1), (2, 2)), limit=1).ok.tolist() == [True, False]


def test_lookups_before_any_evaluation() -> None:
    a = Archive({"f": Counting()}, max_evaluations=1)
    a.evaluate(rows((1, 1)))
    b = Archive({"f": Counting()}, max_evaluations=1)
    got = b.evaluate(rows((1, 1), (2, 2)), limit=0)
    assert got.ok.tolist() == [False, False] and np.isnan(got["f"]).all()
    assert b.n == 0 and b.rows == 2


def test_a_function_returning_the_wrong_number_of_values() -> None:
    a = Archive({"f": lambda x: np.zeros(len(x) + 1)})
    with pytest.raises(ConfigError) as err:
        a.evaluate(rows((1, 1), (2, 2)))
    assert str(err.value) == "search function 'f' returned 3 values for 2 rows"
    assert a.n == 0
    col = Archive({"f": lambda x: np.zeros((len(x), 1))})  # a column is fine: reshaped
    assert col.evaluate(rows((1, 1))).ok.tolist() == [True]


def test_growth_keeps_every_row_and_value() -> None:
    a = Archive({"f": Counting()})
    first = np.stack([np.arange(300), np.zeros(300, np.int64)], axis=1)
    a.evaluate(first)
    assert a.n == 300 and len(a._x) == 300  # exactly what was needed
    second = np.stack([np.arange(300, 310), np.ones(10, np.int64)], axis=1)
    a.evaluate(second)
    assert len(a._x) == 600  # doubled
    assert a.x.tolist() == first.tolist() + second.tolist()
    assert a.value("f").tolist() == [10.0 * i for i in range(300)] + [
        10.0 * i + 1 for i in range(300, 310)
    ]
    small = Archive({"f": Counting()})
    small.evaluate(rows((1, 1)))
    assert len(small._x) == 256  # the smallest allocation
    assert small.evaluate(rows((1, 1), (2, 2)))["f"].tolist() == [11.0, 22.0]
