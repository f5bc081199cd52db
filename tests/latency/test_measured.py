"""The measured-subnet estimator: features, cross-validated fit, auto selection, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.config import LatencyTarget
from onceflow.errors import ConfigError
from onceflow.io import write_json_atomic
from onceflow.latency import build_latency_table, make_backend
from onceflow.latency.estimator import (
    ESTIMATOR_FILE,
    LatencyEstimator,
    estimator_json,
    load_estimator,
)
from onceflow.latency.lut import LUT_FILE
from onceflow.latency.measured import ArchFeatures, MeasuredEstimator, fit_measured
from onceflow.latency.selection import choose_estimator
from onceflow.latency.stage import LatencyTableOutputs
from onceflow.supernet import SearchSpace, Supernet, build_layer
from tests.latency.test_estimator import CAL, synthetic_lut
from tests.latency.test_table import tiny_latency_config


def _archs(space: SearchSpace, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return space.encode_batch([space.sample(rng) for _ in range(n)])


def _device_ms(space: SearchSpace, enc: np.ndarray, seed: int = 0) -> np.ndarray:
    """A device whose latency is a fixed linear cost model of the stage features (depthwise
    convs dear, 1x1 convs cheap) with 2% multiplicative noise: what `measured` must learn."""
    x = ArchFeatures(space).matrix(enc, "stage_costs")
    w = np.random.default_rng(99).uniform(0.2, 1.0, x.shape[1])
    noise = np.random.default_rng(seed).normal(1.0, 0.02, len(enc))
    return (0.05 + x @ w) * noise


def test_features_are_vectorized_and_zero_for_skipped_blocks(default_space: SearchSpace) -> None:
    f = ArchFeatures(default_space)
    enc = _archs(default_space, 50)
    blocks = f.blocks(enc)
    n_active = blocks["blocks"].sum(axis=1)
    depths = np.array([sum(default_space.decode(e).depths) for e in enc])
    np.testing.assert_array_equal(n_active, depths)
    assert all((v[blocks["blocks"] == 0] == 0).all() for v in blocks.values())
    one = np.stack([f.matrix(enc[i : i + 1], "stage_costs")[0] for i in range(5)])
    np.testing.assert_allclose(f.matrix(enc[:5], "stage_costs"), one)
    with pytest.raises(ConfigError, match="choice indices"):
        f.blocks(enc[:, :3])


def test_fit_recovers_a_device_and_ranks_held_out_subnets(default_space: SearchSpace) -> None:
    enc = _archs(default_space, 160)
    y = _device_ms(default_space, enc)
    model = fit_measured(default_space, enc[:100], y[:100])
    pred = MeasuredEstimator(default_space, model).predict(enc[100:])
    rel = np.abs(pred - y[100:]) / y[100:]
    assert np.mean(rel <= 0.10) >= 0.95
    assert model.cv["chosen"] in model.cv["candidates"]
    assert model.n_train == 100 and "lut" not in model.feature_set  # no LUT was given
    with pytest.raises(ConfigError, match="finite positive"):
        fit_measured(default_space, enc[:20], np.r_[y[:19], np.nan])


def test_auto_picks_the_lut_when_it_is_right_and_measured_when_it_is_not(
    default_space: SearchSpace,
) -> None:
    space = default_space
    est = LatencyEstimator(space, synthetic_lut(space), CAL)
    enc = _archs(space, 80, seed=3)
    feats = est.features(enc)
    # A device that behaves exactly like its (calibrated) LUT: the LUT wins.
    lut_like = est.predict(enc)
    c = choose_estimator(space, enc, lut_like, feats=feats, mode="auto")
    assert c.kind == "lut", c.selection
    assert c.selection["cv"]["lut"]["mape"] < 1e-6
    # A device the LUT knows nothing about (its sums are another device's): measured wins,
    # and the record says why, with both cross-validated errors.
    other = _device_ms(space, enc)
    c = choose_estimator(space, enc, other, feats=feats, mode="auto")
    assert c.kind == "measured" and c.selection["reason"].startswith("measured: 5-fold CV MAPE")
    assert c.selection["cv"]["measured"]["mape"] < c.selection["cv"]["lut"]["mape"]
    forced = choose_estimator(space, enc, lut_like, feats=feats, mode="measured")
    assert forced.kind == "measured" and "forced" in forced.selection["reason"]


def test_measured_estimator_round_trips_through_estimator_json(
    tmp_path, default_space: SearchSpace
) -> None:
    space = default_space
    lut = synthetic_lut(space)
    est = LatencyEstimator(space, lut, CAL)
    enc = _archs(space, 60)
    y = _device_ms(space, enc)
    model = fit_measured(space, enc, y, est.raw(enc), feature_sets=("costs+lut",))
    write_json_atomic(tmp_path / LUT_FILE, lut.to_json())
    write_json_atomic(tmp_path / ESTIMATOR_FILE, estimator_json(CAL, "t", model))
    back = load_estimator(tmp_path, space)
    assert isinstance(back, MeasuredEstimator) and back.model == model
    probe = _archs(space, 30, seed=5)
    np.testing.assert_allclose(
        back.predict(probe), MeasuredEstimator(space, model, est.raw).predict(probe)
    )
    assert back.predict_arch(space.decode(probe[0])) == pytest.approx(back.predict(probe[:1])[0])
    (tmp_path / LUT_FILE).unlink()  # the model reads the LUT sums: without them, one clear error
    with pytest.raises(ConfigError, match="lut.json: missing"):
        load_estimator(tmp_path, space)


def test_table_with_estimator_auto_times_training_subnets_and_records_the_choice(
    tmp_path, tiny_space: SearchSpace
) -> None:
    cfg = tiny_latency_config(estimator="auto", measured_subnets=14)
    supernet = Supernet(tiny_space).eval()
    be = make_backend(cfg.targets["t"])
    res = build_latency_table(tiny_space, build_layer, supernet.extract, be, cfg, "t", seed=0)
    roles = [r["role"] for r in res.records]
    assert roles.count("calibration") == 8 and roles.count("validation") == 6
    assert roles.count("training") == 14 - 8  # measured_subnets in all, the 8 included
    sel = res.metrics["estimator_selection"]
    assert sel["mode"] == "auto" and sel["n_train"] == 14 and sel["chosen"] in ("lut", "measured")
    assert set(sel["validation"]) == {"lut", "measured"} and sel["reason"]
    assert res.metrics["estimator"] == sel["chosen"]
    res.metrics["host"] = {}  # what the stage adds (the machine and its load)
    LatencyTableOutputs("t", res, b"").save(tmp_path)
    est = load_estimator(tmp_path, tiny_space)
    assert est.kind == sel["chosen"]
    valid = [r for r in res.records if r["role"] == "validation"]
    enc = tiny_space.encode_batch([tiny_space.canonical(_parse(r["arch"])) for r in valid])
    np.testing.assert_allclose(est.predict(enc), [r["predicted_ms"] for r in valid], rtol=1e-9)


def test_table_with_estimator_measured_times_whole_subnets_only(
    tmp_path, tiny_space: SearchSpace
) -> None:
    """An attached `estimator: measured` target times no per-layer table: only its training
    and validation subnets, and the artifacts hold no lut.json yet load for search."""
    cfg = tiny_latency_config(backend="torch", estimator="measured", measured_subnets=12)
    supernet = Supernet(tiny_space).eval()
    be = make_backend(cfg.targets["t"])
    res = build_latency_table(tiny_space, build_layer, supernet.extract, be, cfg, "t", seed=0)
    assert be.noise["models"] == 12 + 6  # whole subnets only: no layer, no call overhead
    assert res.lut is None and res.calibration is None and res.measured is not None
    roles = [r["role"] for r in res.records]
    assert roles.count("training") == 12 and roles.count("validation") == 6
    assert len({r["arch"] for r in res.records}) == 18
    archs = {r["arch"] for r in res.records if r["role"] == "training"}
    assert {str(tiny_space.min_arch()), str(tiny_space.max_arch())} <= archs
    m = res.metrics
    assert m["estimator"] == "measured" and m["n_measured_train"] == 12
    assert m["lut"].startswith("none") and m["measured_model"] == res.measured.cv["chosen"]
    assert "lut" not in res.measured.feature_set and m["n_validation"] == 6
    res.metrics["host"] = {}
    LatencyTableOutputs("t", res, b"").save(tmp_path)
    assert not (tmp_path / LUT_FILE).exists()
    est = load_estimator(tmp_path, tiny_space)
    assert isinstance(est, MeasuredEstimator)
    enc = tiny_space.encode_batch([_parse(r["arch"]) for r in res.records])
    np.testing.assert_allclose(est.predict(enc), [r["predicted_ms"] for r in res.records])


def _parse(s: str):  # noqa: ANN202
    from onceflow.supernet import Arch

    return Arch.parse(s)


def test_imported_targets_need_the_measured_estimator() -> None:
    from pydantic import ValidationError

    from onceflow.config import LatencyConfig

    with pytest.raises(ValidationError, match="imported target has no per-layer table"):
        LatencyConfig(targets={"phone": LatencyTarget(timings="imported")})
    ok = LatencyConfig(targets={"phone": LatencyTarget(timings="imported", estimator="measured")})
    assert ok.targets["phone"].results_path("phone") == "devices/phone.csv"
