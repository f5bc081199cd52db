"""A device that is not attached: export -> time elsewhere -> import -> table -> search.

The "device" is ONNX Runtime on this machine at another setting (batch 8, a latency per batch)
timing the exported files the way a user would: with its own script, from the files alone.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from onceflow.cli import app
from onceflow.config import (
    BudgetConfig,
    EvolutionConfig,
    NsgaConfig,
    SearchConfig,
    load_params,
)
from onceflow.devices import NO_TRANSFER, device_results_text, device_transfer_text
from onceflow.errors import ConfigError
from onceflow.io import write_json_atomic
from onceflow.latency import load_estimator, make_backend
from onceflow.latency.estimator import LatencyEstimator
from onceflow.latency.imported import covering_archs, read_results
from onceflow.latency.lut import Lut, build_lut
from onceflow.latency.measured import MeasuredEstimator
from onceflow.latency.stage import imported_table
from onceflow.search import run_search
from onceflow.supernet import Arch, SearchSpace, Supernet, build_layer, save_supernet
from tests.conftest import REPO_ROOT, tiny_supernet_config
from tests.latency.conftest import make_protocol

T = "edge"
N_EXPORT = 36
DEVICE = {
    "timings": "imported",
    "estimator": "measured",
    "batch_size": 8,
    "measured_subnets": 24,
}


@pytest.fixture
def project(tmp_path: Path, tiny_space: SearchSpace, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder: params.yaml with the tiny space and an imported target, a supernet."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["supernet"] = tiny_supernet_config().model_dump(mode="json")
    params["latency"]["targets"][T] = dict(DEVICE)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    save_supernet(Supernet(tiny_space).eval(), tmp_path / "models" / "supernet")
    (tmp_path / "devices").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def time_on_device(folder: Path, repeats: int = 25) -> str:
    """What a user does on the device: run every exported file at its manifest input shape and
    write arch,latency_ms rows (some subnets twice: repeats are merged)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = ["arch,latency_ms"]
    for i, s in enumerate(manifest["subnets"]):
        sess = ort.InferenceSession(str(folder / s["file"]), so, providers=["CPUExecutionProvider"])
        x = {sess.get_inputs()[0].name: np.ones(s["input_shape"], dtype=np.float32)}
        for _ in range(3):
            sess.run(None, x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            sess.run(None, x)
            times.append(time.perf_counter() - t0)
        ms = 1e3 * float(np.percentile(times, 25))
        rows += [f"{s['arch']},{ms!r}"] * (2 if i % 10 == 0 else 1)
    return "\n".join(rows) + "\n"


def test_export_time_import_build_search(project: Path, tiny_space: SearchSpace) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["latency", "export", "--target", T, "--n", str(N_EXPORT), "--out",
                              "to-time"])  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads((project / "to-time" / "manifest.json").read_text())
    subnets = manifest["subnets"]
    assert len(subnets) == N_EXPORT == len(list((project / "to-time").glob("*.onnx")))
    archs = [Arch.parse(s["arch"]) for s in subnets]
    assert len(set(archs)) == N_EXPORT and {a.resolution for a in archs} == {12, 16}
    assert tiny_space.min_arch() in archs and tiny_space.max_arch() in archs
    assert all(s["input_shape"] == [8, 1, a.resolution, a.resolution]
               for s, a in zip(subnets, archs, strict=True))  # fmt: skip
    again = runner.invoke(app, ["latency", "export", "--target", T, "--n", "3", "--out",
                                "to-time"])  # fmt: skip
    assert again.exit_code == 2 and "already exists" in again.output

    (project / "results.csv").write_text(time_on_device(project / "to-time"))
    res = runner.invoke(app, ["latency", "import", "--target", T, "results.csv"])
    assert res.exit_code == 0, res.output
    merged = (project / "devices" / f"{T}.csv").read_text().splitlines()
    assert merged[0] == "arch,latency_ms" and len(merged) == 1 + N_EXPORT  # repeats merged

    # device_results@edge passes the file on; latency_table@edge fits on it
    params = load_params("params.yaml")
    passed = device_results_text(params, T, project / "devices")
    assert passed == (project / "devices" / f"{T}.csv").read_text()
    assert device_results_text(params, "ort-cpu", project / "devices") == "arch,latency_ms\n"
    (project / "device_results").mkdir()
    (project / "device_results" / f"{T}.csv").write_text(passed)
    out = imported_table(params, T, tiny_space, project / "device_results" / f"{T}.csv")
    m = out.table.metrics
    assert m["timings"] == "imported" and m["n_imported"] == N_EXPORT and m["n_validation"] >= 5
    # Fidelity on 7 tiny held-out subnets timed on a shared machine is noise (tau 0.24..1.0
    # seen): the record must carry it; the ranking check is the min/max prediction below.
    assert -1.0 <= m["kendall_tau"] <= 1.0 and m["within_10pct"] >= 0.0, m
    out.table.metrics["host"] |= {}
    out.save(project / "latency" / T)
    assert not (project / "latency" / T / "lut.json").exists()  # no per-layer table
    est = load_estimator(project / "latency" / T, tiny_space)
    assert isinstance(est, MeasuredEstimator)
    pred = est.predict(tiny_space.encode_batch([tiny_space.min_arch(), tiny_space.max_arch()]))
    assert 0 < pred[0] < pred[1]


def _write(project: Path, text: str) -> Path:
    p = project / "bad.csv"
    p.write_text(text)
    return p


def _rows(space: SearchSpace, n: int, ms: float = 1.0) -> list[str]:
    return [f"{a},{ms + i / 100}" for i, a in enumerate(covering_archs(space, n))]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "is empty"),
        ("name,ms\nx,1\n", "needs columns arch (or id) and latency_ms"),
        ("arch,latency_ms\nr99-d1_1-w1_1-k3_3_3_3-e2_2_2_2,1.0\n", "line 2: arch r99"),
        ("arch,latency_ms\nnot-an-arch,1.0\n", "line 2: cannot parse arch string"),
        ("GOOD\nARCH,nan\n", "latency_ms 'nan' must be finite and > 0"),
        ("GOOD\nARCH,-1\n", "latency_ms '-1' must be finite and > 0"),
        ("GOOD\nARCH,0\n", "latency_ms '0' must be finite and > 0"),
        ("GOOD\nARCH,fast\n", "latency_ms 'fast' is not a number"),
        ("GOOD\nARCH\n", "1 columns, expected 2"),
        ("arch,latency_ms\nFEW\n", "distinct subnets, need at least 24"),
        ("id,latency_ms\ns999,1.0\n", "unknown subnet id 's999'"),
    ],
)
def test_bad_results_are_one_line_exit_2_and_write_nothing(
    project: Path, tiny_space: SearchSpace, body: str, message: str
) -> None:
    good = _rows(tiny_space, 30)
    body = body.replace("GOOD", "arch,latency_ms\n" + "\n".join(good[:29]))
    body = body.replace("ARCH", good[29].split(",")[0]).replace("FEW", "\n".join(good[:5]))
    res = CliRunner().invoke(app, ["latency", "import", "--target", T, str(_write(project, body))])
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0 and "bad.csv" in res.output
    assert message in res.output, res.output
    assert list((project / "devices").iterdir()) == []  # nothing half-written


def test_import_refuses_an_attached_target_and_a_missing_supernet(project: Path) -> None:
    res = CliRunner().invoke(app, ["latency", "import", "--target", "ort-cpu", "x.csv"])
    assert res.exit_code == 2 and "set timings: imported" in res.output
    res = CliRunner().invoke(
        app, ["latency", "import", "--target", T, "x.csv", "--supernet", "nowhere"]
    )
    assert res.exit_code == 2 and "x.csv: cannot read" in res.output


def test_results_merge_duplicates_and_accept_manifest_ids(tiny_space: SearchSpace) -> None:
    archs = covering_archs(tiny_space, 12)
    text = "arch,latency_ms\n" + "".join(f"{a},{1 + i}\n" for i, a in enumerate(archs))
    text += f"{archs[0]},3\n{archs[0]},2\n"  # 1, 3, 2 -> median 2
    rows = read_results(text, tiny_space, source="r.csv", min_rows=12)
    assert len(rows) == 12 and rows[0] == (tiny_space.canonical(archs[0]), 2.0)
    ids = {f"s{i:03d}": str(a) for i, a in enumerate(archs)}
    by_id = "id,latency_ms\n" + "".join(f"s{i:03d},{1 + i}\n" for i in range(12))
    assert read_results(by_id, tiny_space, source="r.csv", min_rows=12, ids=ids)[3][1] == 4.0
    with pytest.raises(ConfigError, match="r.csv: 12 distinct subnets, need at least 13"):
        read_results(text, tiny_space, source="r.csv", min_rows=13)


def _device_table(space: SearchSpace, project: Path, name: str, ms: np.ndarray) -> object:
    archs = covering_archs(space, len(ms))
    rows = "arch,latency_ms\n" + "".join(
        f"{a},{float(v)!r}\n" for a, v in zip(archs, ms, strict=True)
    )
    path = project / f"{name}.csv"
    path.write_text(rows)
    params = load_params("params.yaml")
    out = imported_table(params, T, space, path)
    out.table.metrics["host"] = {}
    out.save(project / "latency" / name)
    return load_estimator(project / "latency" / name, space)


def test_search_picks_follow_the_device_ranking(project: Path, tiny_space: SearchSpace) -> None:
    """Two devices that rank subnets differently (one pays for resolution, the other for
    kernel size and depth) get different picks at the same budgets and the same accuracy."""
    space = tiny_space
    archs = covering_archs(space, 40)
    res_cost = np.array([a.resolution**2 for a in archs], dtype=float) / 100.0
    k_cost = np.array([sum(a.kernels[: sum(a.depths)]) + 3 * sum(a.depths) for a in archs], float)
    by_res = _device_table(space, project, "by-res", 0.5 + res_cost)
    by_kernel = _device_table(space, project, "by-kernel", 0.5 + k_cost / 4)
    cfg = SearchConfig(
        nsga=NsgaConfig(pop_size=30, generations=20, polish_sweeps=2),
        evolution=EvolutionConfig(population=20, generations=30),
        random_samples=300,
    )
    budgets = BudgetConfig(unit="fraction", values=[0.3, 0.6])

    def accuracy(x: np.ndarray) -> np.ndarray:  # a bigger net is better, whatever its cost
        d = [space.decode(r) for r in x]
        return np.array([a.resolution / 16 + sum(a.depths) / 4 + sum(a.kernels) / 20 for a in d])

    picks = {}
    for name, est in (("by-res", by_res), ("by-kernel", by_kernel)):
        r = run_search(space.dimensions(), cfg, budgets, accuracy, est.predict, seed=0)
        picks[name] = [str(space.decode(p.x)) for p in r.picks]
        assert all(p.latency <= p.budget * (1 + 1e-9) for p in r.picks)
    assert picks["by-res"] != picks["by-kernel"], picks


# ----------------------------------------------------------------- transfer from an attached LUT
@pytest.fixture
def ort_cpu_lut(project: Path, tiny_space: SearchSpace) -> Path:
    """latency/ort-cpu/lut.json: the attached ort-cpu target's table of the tiny space."""
    target = load_params("params.yaml").latency.targets["ort-cpu"]
    specs = tiny_space.unique_layer_specs()
    protocol = make_protocol(warmup=1, repeats=3)
    lut, _ = build_lut(specs, build_layer, make_backend(target), protocol, target.batch_size)
    meta = {"target": "ort-cpu", "space": tiny_space.to_json()}
    path = project / "latency" / "ort-cpu" / "lut.json"
    write_json_atomic(path, Lut(lut.entries, lut.overhead, meta).to_json())
    return path


def _import(*args: str) -> object:
    return CliRunner().invoke(app, ["latency", "import", "--target", T, *args])


def test_round_trip_transfers_the_lut_of_an_attached_target(
    project: Path, tiny_space: SearchSpace, ort_cpu_lut: Path
) -> None:
    res = CliRunner().invoke(app, ["latency", "export", "--target", T, "--n", str(N_EXPORT),
                                   "--out", "to-time"])  # fmt: skip
    assert res.exit_code == 0, res.output
    (project / "results.csv").write_text(time_on_device(project / "to-time"))
    res = _import("results.csv", "--transfer-from", "ort-cpu")
    assert res.exit_code == 0, res.output
    copied = json.loads((project / "devices" / f"{T}.lut.json").read_text())
    assert copied["transfer_from"] == "ort-cpu"
    assert copied["lut_sha256"] == hashlib.sha256(ort_cpu_lut.read_bytes()).hexdigest()

    # device_results@edge passes it on (attached targets get "none"); the fit is offered it
    params = load_params("params.yaml")
    passed = device_transfer_text(params, T, project / "devices")
    assert passed == (project / "devices" / f"{T}.lut.json").read_text()
    assert device_transfer_text(params, "ort-cpu", project / "devices") == NO_TRANSFER
    (project / "transfer.json").write_text(passed)
    out = imported_table(params, T, tiny_space, project / "devices" / f"{T}.csv",
                         project / "transfer.json")  # fmt: skip
    m, model = out.table.metrics, out.table.measured
    assert m["transfer_from"] == "ort-cpu" and m["transfer_lut_offered"] is True
    assert m["transfer_lut_sha256"] == copied["lut_sha256"]
    assert m["transfer_lut_used"] is model.uses_lut  # chosen by CV, either way recorded
    assert {"lut@1", "costs+lut@1", "stage_costs+lut@1"} <= set(model.cv["candidates"])

    # a device whose latency is the LUT's sum scaled: the fit uses it, the table carries it
    archs = covering_archs(tiny_space, 30)
    raw = LatencyEstimator(tiny_space, Lut.from_json(copied["lut"])).raw
    ms = 3.0 * raw(tiny_space.encode_batch(archs)) + 0.2
    (project / "scaled.csv").write_text(
        "arch,latency_ms\n" + "".join(f"{a},{float(v)!r}\n" for a, v in zip(archs, ms, strict=True))
    )
    scaled = imported_table(params, T, tiny_space, project / "scaled.csv",
                            project / "transfer.json")  # fmt: skip
    assert scaled.table.metrics["transfer_lut_used"] is True, scaled.table.measured.cv["chosen"]
    scaled.table.metrics["host"] = {}
    scaled.save(project / "latency" / T)
    assert json.loads((project / "latency" / T / "estimator.json").read_text())["lut"] == "lut.json"
    est = load_estimator(project / "latency" / T, tiny_space)
    enc = tiny_space.encode_batch([tiny_space.min_arch(), tiny_space.max_arch()])
    np.testing.assert_allclose(est.predict(enc), 3.0 * raw(enc) + 0.2, rtol=0.02)

    # a re-import without --transfer-from removes the old LUT: nothing stale is kept
    res = _import("results.csv")
    assert res.exit_code == 0, res.output
    assert not (project / "devices" / f"{T}.lut.json").exists()
    assert device_transfer_text(params, T, project / "devices") == NO_TRANSFER


@pytest.mark.parametrize(
    ("source", "lut_text", "message"),
    [
        ("nowhere", None, "latency.targets has no 'nowhere'"),
        ("ort-cpu", None, "latency/ort-cpu/lut.json missing; name an attached target"),
        (T, None, "a target cannot transfer from itself"),
        ("ort-cpu", "{not json", "latency/ort-cpu/lut.json: not JSON"),
        ("ort-cpu", '{"schema_version": 1, "overhead": {}, "entries": []}', "not a latency table"),
    ],
)
def test_bad_transfer_from_is_one_line_exit_2_and_writes_nothing(
    project: Path, tiny_space: SearchSpace, source: str, lut_text: str | None, message: str
) -> None:
    if lut_text is not None:
        (project / "latency" / "ort-cpu").mkdir(parents=True)
        (project / "latency" / "ort-cpu" / "lut.json").write_text(lut_text)
    good = _write(project, "arch,latency_ms\n" + "\n".join(_rows(tiny_space, 30)) + "\n")
    res = _import(str(good), "--transfer-from", source)
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0 and message in res.output, res.output
    assert list((project / "devices").iterdir()) == []  # nothing half-written
