import numpy as np

from onceflow.data.split import stratified_split, stratified_subset


def _labels():
    return np.repeat(np.arange(5), [100, 80, 60, 40, 20])


def test_split_is_deterministic_and_disjoint():
    y = _labels()
    a = stratified_split(y, 0.2, np.random.default_rng(7))
    b = stratified_split(y, 0.2, np.random.default_rng(7))
    c = stratified_split(y, 0.2, np.random.default_rng(8))
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])
    assert not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == len(y)


def test_split_is_stratified():
    y = _labels()
    _, val = stratified_split(y, 0.2, np.random.default_rng(0))
    assert np.bincount(y[val]).tolist() == [20, 16, 12, 8, 4]


def test_tiny_class_keeps_one_each_side():
    y = np.array([0, 0, 1, 1, 1, 1])
    tr, va = stratified_split(y, 0.1, np.random.default_rng(0))
    assert set(y[tr]) == {0, 1} and set(y[va]) == {0, 1}


def test_subset_is_proportional():
    y = _labels()
    idx = stratified_subset(y, 30, np.random.default_rng(0))
    assert len(idx) == 30
    assert np.bincount(y[idx]).tolist() == [10, 8, 6, 4, 2]
