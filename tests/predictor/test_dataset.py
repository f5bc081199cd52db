"""Dataset building: spread sampling, resumable CSV keyed by arch and context, real measurement."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from onceflow.data.prepared import load_prepared
from onceflow.predictor.dataset import (
    COLUMNS,
    MeasureSettings,
    MeterPool,
    SubnetMeter,
    build_dataset,
    read_rows,
    sample_archs,
)
from onceflow.predictor.encoding import ArchEncoder
from onceflow.supernet import Arch, SearchSpace
from onceflow.supernet.supernet import load_supernet
from tests.predictor.conftest import write_supernet


class Killed(Exception):
    pass


def fake_measure(space: SearchSpace, calls: list[Arch], kill_after: int | None = None):
    """Accuracy = a deterministic function of the arch; raises after ``kill_after`` calls."""
    enc = ArchEncoder(space)

    def measure(arch: Arch) -> float:
        if kill_after is not None and len(calls) >= kill_after:
            raise Killed
        calls.append(arch)
        return float(np.log10(enc.macs(space.encode_batch([arch]))[0]) / 10)

    return measure


def test_sample_archs_spread_distinct_deterministic(default_space: SearchSpace) -> None:
    archs = sample_archs(default_space, 60, seed=3)
    assert archs[:2] == [default_space.min_arch(), default_space.max_arch()]
    assert len(set(archs)) == 60 and archs == sample_archs(default_space, 60, seed=3)
    enc = ArchEncoder(default_space)
    log_macs = np.log10(enc.macs(default_space.encode_batch(archs)))
    # Spread: every fifth of the [min, max] log-MACs range holds some samples, where uniform
    # sampling leaves the ends empty.
    bins = np.histogram(log_macs[2:], bins=5, range=(log_macs[0], log_macs[1]))[0]
    assert bins.min() >= 5, bins
    rng = np.random.default_rng(0)
    uni = [default_space.sample(rng) for _ in range(58)]
    ubins = np.histogram(
        np.log10(enc.macs(default_space.encode_batch(uni))), bins=5,
        range=(log_macs[0], log_macs[1]),
    )[0]  # fmt: skip
    assert min(ubins[0], ubins[-1]) <= 1, ubins


def test_resume_after_kill_measures_each_arch_once(tmp_path: Path, tiny_space: SearchSpace):
    csv = tmp_path / "arch_acc.csv"
    archs = sample_archs(tiny_space, 12, seed=0)
    calls: list[Arch] = []
    with pytest.raises(Killed):
        build_dataset(archs, fake_measure(tiny_space, calls, kill_after=5), csv, "ctx")
    assert len(read_rows(csv, "ctx")) == 5
    # Simulate a kill in the middle of writing a row.
    with open(csv, "a") as fh:
        fh.write(f"{archs[7]},0.5")
    calls2: list[Arch] = []
    got, acc = build_dataset(archs, fake_measure(tiny_space, calls2), csv, "ctx")
    assert calls2 == archs[5:]  # only the rest, in order; the partial row was dropped
    ref_calls: list[Arch] = []
    ref = [fake_measure(tiny_space, ref_calls)(a) for a in archs]
    np.testing.assert_allclose([m.accuracy for m in acc], ref, atol=1e-6)
    assert got == archs and len(csv.read_text().splitlines()) == 13  # header + 12


def test_a_fresh_workspace_resumes_from_the_machines_rows(tmp_path: Path, tiny_space):
    """A flow run's workspace dies with its CSV; the machine's store (one file per context)
    outlives it, so the next run's fresh workspace measures only what is left."""
    archs = sample_archs(tiny_space, 10, seed=0)
    store = tmp_path / "host" / "ctx.csv"
    calls: list[Arch] = []
    with pytest.raises(Killed):
        build_dataset(
            archs, fake_measure(tiny_space, calls, kill_after=4), tmp_path / "ws1.csv", "ctx",
            store=store,
        )  # fmt: skip
    calls2: list[Arch] = []
    fresh = tmp_path / "ws2.csv"  # the next run's workspace: no CSV yet
    got, acc = build_dataset(archs, fake_measure(tiny_space, calls2), fresh, "ctx", store=store)
    assert calls2 == archs[4:] and got == archs
    assert set(read_rows(fresh, "ctx")) == set(read_rows(store, "ctx")) == {str(a) for a in archs}
    ref = [fake_measure(tiny_space, [])(a) for a in archs]
    np.testing.assert_allclose([m.accuracy for m in acc], ref, atol=1e-6)
    # Another context in the same store file is never reused.
    calls3: list[Arch] = []
    build_dataset(archs, fake_measure(tiny_space, calls3), tmp_path / "ws3.csv", "ctx2",
                  store=store)  # fmt: skip
    assert calls3 == archs


def test_the_csv_records_this_runs_archs_only(tmp_path: Path, tiny_space):
    """Two experiments of one measurement context (other n_samples) share the machine's rows,
    but each one's CSV (its DVC output) holds exactly the subnets it asked for."""
    store = tmp_path / "host" / "ctx.csv"
    big, small = sample_archs(tiny_space, 10, seed=0), sample_archs(tiny_space, 4, seed=0)
    build_dataset(big, fake_measure(tiny_space, []), tmp_path / "a.csv", "ctx", store=store)
    calls: list[Arch] = []
    got, _ = build_dataset(small, fake_measure(tiny_space, calls), tmp_path / "b.csv", "ctx",
                           store=store)  # fmt: skip
    assert got == small and not set(map(str, calls)) & set(map(str, big))  # reused, not redone
    assert list(read_rows(tmp_path / "b.csv", "ctx")) == [str(a) for a in small]
    assert set(read_rows(store, "ctx")) >= {str(a) for a in big + small}


def test_rows_of_another_context_are_remeasured(tmp_path: Path, tiny_space: SearchSpace):
    csv = tmp_path / "arch_acc.csv"
    archs = sample_archs(tiny_space, 6, seed=0)
    build_dataset(archs, fake_measure(tiny_space, []), csv, "old-supernet")
    calls: list[Arch] = []
    build_dataset(archs, fake_measure(tiny_space, calls), csv, "new-supernet")
    assert calls == archs
    assert read_rows(csv, "old-supernet") == {}  # stale rows gone from the file


def test_csv_of_an_older_layout_is_remeasured_not_an_error(tmp_path: Path, tiny_space) -> None:
    csv = tmp_path / "arch_acc.csv"
    archs = sample_archs(tiny_space, 4, seed=0)
    csv.write_text("arch,accuracy,seconds,context\n" + f"{archs[0]},0.5,1.0,ctx\n")
    calls: list[Arch] = []
    build_dataset(archs, fake_measure(tiny_space, calls), csv, "ctx")
    assert calls == archs
    assert csv.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_subnet_meter_measures_real_accuracy(tmp_path: Path, tiny_space, tiny_prepared):
    net = load_supernet(write_supernet(tmp_path / "supernet", tiny_space))
    data = load_prepared(tiny_prepared)
    meter = SubnetMeter(net, data, MeasureSettings(40, 30, 16, 0, None, 0))
    a, b = tiny_space.min_arch(), tiny_space.max_arch()
    acc_a, acc_b = meter(a), meter(b)
    assert 0.0 <= acc_a <= 1.0 and 0.0 <= acc_b <= 1.0
    assert meter.n_eval == 30
    assert meter(a) == acc_a  # same subset, same recalibration: deterministic
    m = meter.measure(b)
    assert m.accuracy == acc_b
    # The whole-set accuracy is the mean of the two fixed halves (15 images each).
    assert math.isclose(m.accuracy, (m.accuracy_a + m.accuracy_b) / 2)
    assert SubnetMeter(net, data, MeasureSettings(40, None, 16, 0, None, 0)).n_eval == len(data.val)


def test_parallel_workers_write_the_same_rows_in_order(tmp_path: Path, tiny_space) -> None:
    archs = sample_archs(tiny_space, 10, seed=1)
    serial, parallel = tmp_path / "serial.csv", tmp_path / "parallel.csv"
    build_dataset(archs, fake_measure(tiny_space, []), serial, "ctx")
    calls: list[Arch] = []
    got, acc = build_dataset(archs, fake_measure(tiny_space, calls), parallel, "ctx", workers=3)
    assert sorted(map(str, calls)) == sorted(map(str, archs)) and got == archs
    strip = lambda p: [line.rsplit(",", 2)[0] for line in p.read_text().splitlines()]  # noqa: E731
    assert strip(parallel) == strip(serial)  # same archs and values, same order (not seconds)


def test_parallel_error_keeps_the_rows_before_it(tmp_path: Path, tiny_space) -> None:
    csv = tmp_path / "arch_acc.csv"
    archs = sample_archs(tiny_space, 12, seed=0)
    inner = fake_measure(tiny_space, [])

    def measure(arch: Arch) -> float:
        if arch == archs[6]:
            raise Killed
        return inner(arch)

    with pytest.raises(Killed):
        build_dataset(archs, measure, csv, "ctx", workers=2)
    kept = read_rows(csv, "ctx")
    assert list(kept) == [str(a) for a in archs[:6]]  # in order, none after the failure


def test_meter_pool_measures_like_one_meter(tmp_path: Path, tiny_space, tiny_prepared) -> None:
    """Two supernet copies on two threads give the measurements of one meter, in order."""
    net = load_supernet(write_supernet(tmp_path / "supernet", tiny_space))
    data = load_prepared(tiny_prepared)
    settings = MeasureSettings(40, 30, 16, 0, None, 0)
    archs = sample_archs(tiny_space, 8, seed=2)
    one = SubnetMeter(net, data, settings)
    want = [one.measure(a) for a in archs]
    pool = MeterPool([SubnetMeter(copy.deepcopy(net), data, settings) for _ in range(2)])
    _, got = build_dataset(archs, pool.measure, tmp_path / "pool.csv", "ctx", workers=2)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.values()[:6], w.values()[:6], atol=1e-6)
