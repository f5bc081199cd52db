from __future__ import annotations

import numpy as np
import pytest

from onceflow.errors import ConfigError
from onceflow.io import write_json_atomic
from onceflow.latency.calibration import Calibration
from onceflow.latency.estimator import (
    ESTIMATOR_FILE,
    LatencyEstimator,
    estimator_json,
    load_estimator,
)
from onceflow.latency.lut import LUT_FILE, Lut, check_coverage
from onceflow.latency.protocol import LatencyStats
from onceflow.supernet import SearchSpace

CAL = Calibration(
    "per_kind", ("stem", "blocks", "head", "n_layers", "one"), (1.3, 0.95, 1.1, 0.007, 0.02)
)


def synthetic_lut(space: SearchSpace, seed: int = 0) -> Lut:
    """Distinct random latencies per spec, so any wrong lookup changes the sum."""
    rng = np.random.default_rng(seed)
    entries = {
        s: LatencyStats.from_samples([rng.uniform(0.01, 1.0)]) for s in space.unique_layer_specs()
    }
    return Lut(entries, LatencyStats.from_samples([0.005]), meta={"space": space.to_json()})


@pytest.mark.parametrize("space_name", ["tiny_space", "default_space"])
def test_every_layer_of_sampled_archs_has_a_lut_entry(space_name: str, request) -> None:
    space = request.getfixturevalue(space_name)
    unique = set(space.unique_layer_specs())
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(1000)] + [space.min_arch(), space.max_arch()]
    used = {s for a in archs for s in space.layer_specs(a)}
    assert used <= unique
    check_coverage(synthetic_lut(space), space)


@pytest.mark.parametrize("space_name", ["tiny_space", "default_space"])
def test_vectorized_equals_scalar(space_name: str, request) -> None:
    space = request.getfixturevalue(space_name)
    est = LatencyEstimator(space, synthetic_lut(space), CAL)
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(500)] + [space.min_arch(), space.max_arch()]
    vec = est.predict(space.encode_batch(archs))
    scalar = np.array([est.predict_arch(a) for a in archs])
    np.testing.assert_allclose(vec, scalar, rtol=1e-12, atol=1e-12)
    # and the raw sum is literally the sum of the archs' layer entries
    lut = est.lut
    a = archs[0]
    manual = sum(lut.latency(s) - lut.overhead.median for s in space.layer_specs(a))
    assert est.raw(space.encode_batch([a]))[0] == pytest.approx(manual + lut.overhead.median)


def test_skipped_blocks_do_not_count(tiny_space: SearchSpace) -> None:
    est = LatencyEstimator(tiny_space, synthetic_lut(tiny_space))
    a = tiny_space.min_arch()  # depth 1 everywhere: second block of each stage is skipped
    e = tiny_space.encode_batch([a])
    names = [d.name for d in tiny_space.dimensions()]
    e2 = e.copy()
    e2[0, names.index("kernel.b1")] = 1  # kernel of a skipped block
    assert est.predict(e2)[0] == est.predict(e)[0]


def test_missing_entry_names_the_spec(tiny_space: SearchSpace) -> None:
    lut = synthetic_lut(tiny_space)
    lut.entries.pop(tiny_space.stem_spec(12))
    with pytest.raises(ConfigError, match="stem:in_res=12"):
        LatencyEstimator(tiny_space, lut)
    with pytest.raises(ConfigError, match="lacks 1"):
        check_coverage(lut, tiny_space)


def test_bad_encoded_shape(tiny_space: SearchSpace) -> None:
    est = LatencyEstimator(tiny_space, synthetic_lut(tiny_space))
    with pytest.raises(ConfigError, match="choice indices"):
        est.predict(np.zeros((3, 2), dtype=np.int64))


def test_load_estimator_round_trip(
    tiny_space: SearchSpace, default_space: SearchSpace, tmp_path
) -> None:
    lut = synthetic_lut(tiny_space)
    write_json_atomic(tmp_path / LUT_FILE, lut.to_json())
    write_json_atomic(tmp_path / ESTIMATOR_FILE, estimator_json(CAL, "t"))
    est = load_estimator(tmp_path, tiny_space)
    ref = LatencyEstimator(tiny_space, lut, CAL)
    rng = np.random.default_rng(3)
    e = tiny_space.encode_batch([tiny_space.sample(rng) for _ in range(50)])
    np.testing.assert_allclose(est.predict(e), ref.predict(e))
    with pytest.raises(ConfigError, match="different search space"):
        load_estimator(tmp_path, default_space)
    (tmp_path / ESTIMATOR_FILE).unlink()
    with pytest.raises(ConfigError, match="missing"):
        load_estimator(tmp_path, tiny_space)
