from __future__ import annotations

import numpy as np
import pytest

from onceflow.config import LatencyConfig, LatencyTarget, MeasureProtocolConfig
from onceflow.errors import BackendUnavailable, ConfigError
from onceflow.latency import build_latency_table, make_backend
from onceflow.latency.estimator import LatencyEstimator
from onceflow.latency.lut import Lut, build_lut, spec_key
from onceflow.latency.table import sample_distinct
from onceflow.supernet import SearchSpace, Supernet, build_layer
from tests.latency.conftest import make_protocol


def test_lut_on_ort_covers_the_space_and_round_trips(tiny_space: SearchSpace) -> None:
    specs = tiny_space.unique_layer_specs()
    be = make_backend(LatencyTarget())
    lut, seconds = build_lut(specs, build_layer, be, make_protocol(warmup=1, repeats=3), 1)
    assert set(lut.entries) == set(specs) and seconds > 0
    assert all(s.median > 0 and s.n == 3 for s in lut.entries.values())
    assert 0 < lut.overhead.median < max(s.median for s in lut.entries.values())
    back = Lut.from_json(lut.to_json())
    assert back.entries == lut.entries and back.overhead == lut.overhead
    assert len({spec_key(s) for s in specs}) == len(specs)  # keys are unique


def test_lut_rejects_other_schema(tiny_space: SearchSpace) -> None:
    d = {"schema_version": 99, "overhead": {}, "entries": []}
    with pytest.raises(ConfigError, match="schema_version 99"):
        Lut.from_json(d, "x/lut.json")


def test_sample_distinct_refuses_impossible_counts(tiny_space: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    archs = sample_distinct(tiny_space, 20, rng)
    assert len(set(archs)) == 20
    with pytest.raises(ConfigError, match="distinct"):
        sample_distinct(tiny_space, tiny_space.size() + 1, rng)


def tiny_latency_config(**target: object) -> LatencyConfig:
    return LatencyConfig(
        targets={"t": LatencyTarget(**target)},
        protocol=MeasureProtocolConfig(warmup=2, repeats=15, number=1),
        calibration_subnets=8,
        validation_subnets=6,
    )


def test_build_table_end_to_end_on_ort(tiny_space: SearchSpace) -> None:
    cfg = tiny_latency_config()
    supernet = Supernet(tiny_space).eval()  # random weights: latency does not depend on them
    be = make_backend(cfg.targets["t"])
    res = build_latency_table(tiny_space, build_layer, supernet.extract, be, cfg, "t", seed=0)
    m = res.metrics
    assert m["n_validation"] == 6 and m["n_calibration"] == 8
    assert m["lut_entries"] == len(tiny_space.unique_layer_specs())
    for key in ("mape", "within_10pct", "kendall_tau", "spearman", "noise_cv", "build_seconds"):
        assert np.isfinite(m[key]), key
    assert res.lut.meta["environment"]["backend"] == "onnxruntime"
    assert res.lut.meta["protocol"]["repeats"] == 15
    roles = [r["role"] for r in res.records]
    assert roles == ["calibration"] * 8 + ["validation"] * 6
    assert len({r["arch"] for r in res.records}) == 14  # held-out subnets are distinct
    assert res.records[0]["arch"] == str(tiny_space.min_arch())
    # The estimator built from the table reproduces the recorded predictions.
    est = LatencyEstimator(tiny_space, res.lut, res.calibration)
    archs = [tiny_space.decode(tiny_space.encode(a)) for a in (tiny_space.min_arch(),)]
    assert est.predict(tiny_space.encode_batch(archs))[0] == pytest.approx(
        res.records[0]["predicted_ms"]
    )
    # The calibration set starts with the extremes, min then max (that the max arch measures
    # slower is a speed comparison: benchmarks/bench_protocol.py).
    assert res.records[1]["arch"] == str(tiny_space.max_arch())
    assert all(r["measured_ms"] > 0 for r in res.records)


def test_unavailable_backend_fails_with_reason_not_a_fake_table(tiny_space: SearchSpace) -> None:
    cfg = tiny_latency_config(providers=["NoSuchExecutionProvider"])
    be = make_backend(cfg.targets["t"])
    with pytest.raises(BackendUnavailable, match="NoSuchExecutionProvider"):
        build_latency_table(tiny_space, build_layer, lambda a: None, be, cfg, "t")


def test_build_table_on_ort_int8_times_quantized_layers_and_subnets(
    tiny_space: SearchSpace,
) -> None:
    cfg = tiny_latency_config(precision="int8", options={"int8_calibration_images": 4})
    supernet = Supernet(tiny_space).eval()
    images = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    be = make_backend(cfg.targets["t"], images)
    res = build_latency_table(tiny_space, build_layer, supernet.extract, be, cfg, "t", seed=0)
    assert res.lut.meta["environment"]["quantization"]["format"] == "QDQ"
    assert res.lut.meta["target_config"]["precision"] == "int8"
    assert np.isfinite(res.metrics["kendall_tau"]) and res.metrics["n_validation"] == 6
    assert res.records[1]["measured_ms"] > res.records[0]["measured_ms"]  # max > min


def test_a_target_may_set_its_own_repeats_and_sessions() -> None:
    from onceflow.latency.table import protocol_from_config

    cfg = LatencyConfig(
        targets={
            "own": LatencyTarget(backend="torch", protocol_repeats=30, protocol_sessions=1),
            "shared": LatencyTarget(),
        }
    )
    own = protocol_from_config(cfg, cfg.targets["own"], seed=0)
    shared = protocol_from_config(cfg, cfg.targets["shared"], seed=0)
    assert (own.repeats, own.sessions) == (30, 1)
    assert (shared.repeats, shared.sessions) == (cfg.protocol.repeats, cfg.protocol.sessions)
    assert own.warmup == shared.warmup and own.clock == shared.clock == "thread_cpu"
