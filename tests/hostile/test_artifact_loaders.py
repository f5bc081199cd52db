"""Every JSON artifact a stage reads, broken every way a file breaks.

One checked loader per kind (onceflow.artifacts and the kind's reader) must turn each damage into
one OnceflowError line with exit code 2 that names the file, what is wrong and the stage that
makes it (``dvc repro <stage>``; the registry index: ``onceflow publish``). The bulk of the rows
run in process (the loader a stage calls); a few run the real stage in a subprocess
(tests/hostile/harness.py: exit 2, one ERROR line, no traceback, no output written); a
hypothesis property damages each artifact's bytes at random and accepts only "loads" or "that
one line".
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceflow import artifacts
from onceflow.config import PredictorConfig
from onceflow.data.prepared import load_prepared
from onceflow.errors import OnceflowError
from onceflow.latency import load_estimator
from onceflow.package.manifest import load_manifest
from onceflow.package.pipeline import parse_selection
from onceflow.predictor import AccuracyPredictor, ArchEncoder, load_predictor, save_predictor
from onceflow.predictor.models import make_model
from onceflow.registry import open_store, publish_package
from onceflow.registry.index import parse_index
from onceflow.supernet import SearchSpace, Supernet, load_supernet, save_supernet
from tests.conftest import tiny_supernet_config
from tests.hostile.harness import Row, Workspace, check, run_stage
from tests.predictor.conftest import write_latency_dir
from tests.registry.fixtures import make_package

T = "ort-cpu"
SPACE = SearchSpace(tiny_supernet_config(), 1, 10, 28)


@dataclass(frozen=True)
class Kind:
    """An artifact kind: its file in a built run, how a stage loads it, who makes it."""

    name: str
    rel: str  # the file, relative to the run folder
    load: Callable[[Path], Any]  # run folder -> what the stage gets
    fix: str  # the message must name this (the stage that makes it)
    expect: type = dict  # the top-level JSON type


def _selection(run: Path) -> Any:
    p = run / f"search/{T}/selected.json"
    return parse_selection(artifacts.selection(p), str(p), SPACE)


def _index(run: Path) -> Any:
    p = run / f"registry/{T}/index.json"
    return parse_index(p.read_bytes() if p.is_file() else b"", T, str(p))


KINDS = [
    Kind("prepared-meta", "prepared/meta.json", lambda r: load_prepared(r / "prepared"),
         "dvc repro prepare"),
    Kind("supernet-space", "supernet/space.json", lambda r: load_supernet(r / "supernet"),
         "dvc repro train_supernet"),
    Kind("latency-lut", f"latency/{T}/lut.json",
         lambda r: load_estimator(r / f"latency/{T}", SPACE), "dvc repro latency_table"),
    Kind("latency-estimator", f"latency/{T}/estimator.json",
         lambda r: load_estimator(r / f"latency/{T}", SPACE), "dvc repro latency_table"),
    Kind("latency-validation", f"latency/{T}/validation.json",
         lambda r: artifacts.latency_validation(r / f"latency/{T}/validation.json"),
         f"dvc repro latency_table@{T}", list),
    Kind("predictor-model", "predictor/predictor.json",
         lambda r: load_predictor(r / "predictor", SPACE), "dvc repro predictor"),
    Kind("search-selection", f"search/{T}/selected.json", _selection, f"dvc repro search@{T}"),
    Kind("package-manifest", f"artifacts/{T}/m1/manifest.json",
         lambda r: load_manifest(r / f"artifacts/{T}/m1"), f"dvc repro package@{T}"),
    Kind("registry-index", f"registry/{T}/index.json", _index, "onceflow publish"),
]  # fmt: skip


def build_run(root: Path, prepared: Path) -> Path:
    """One valid artifact of every kind under ``root``."""
    shutil.copytree(prepared, root / "prepared")
    torch.manual_seed(0)
    save_supernet(Supernet(SPACE), root / "supernet")
    lat = write_latency_dir(root / f"latency/{T}", SPACE, T)
    arch = SPACE.max_arch()
    records = [{"role": "validation", "arch": str(arch), "measured_ms": 1.5, "predicted_ms": 1.4}]
    (lat / "validation.json").write_text(json.dumps(records))
    rng = np.random.default_rng(0)
    x = SPACE.encode_batch([SPACE.sample(rng) for _ in range(12)])
    enc = ArchEncoder(SPACE)
    model = make_model("ridge", PredictorConfig()).fit(enc.features(x), rng.random(12))
    save_predictor(AccuracyPredictor(enc, model), root / "predictor", {})
    sel = {"selected": [{"budget_ms": 2.0, "arch": str(arch), "arch_json": arch.to_json()}]}
    (root / f"search/{T}").mkdir(parents=True)
    (root / f"search/{T}/selected.json").write_text(json.dumps(sel))
    pkg = make_package(root / "artifacts", T, "m1", accuracy=0.9, latency_ms=1.0)
    publish_package(open_store(f"file://{root / 'registry'}"), pkg)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> Path:
    run = build_run(tmp_path_factory.mktemp("run"), prepared)
    for kind in KINDS:  # every kind loads as built
        kind.load(run)
    return run


# ---------------------------------------------------------------------------- the damages
def _prepend(data: bytes, expect: type, item: bytes) -> bytes:
    """``item`` as the first member of the top-level object/array in ``data``."""
    body = data.lstrip()[1:].lstrip()
    sep = b"" if body[:1] in (b"}", b"]") else b", "
    return (b'{"_x": ' if expect is dict else b"[") + item + sep + body


def _every_field_a_string(data: bytes, expect: type) -> bytes:
    doc = json.loads(data)
    doc = {k: "x" for k in doc} if expect is dict else ["x" for _ in doc]
    return json.dumps(doc).encode()


DAMAGES: dict[str, Callable[[bytes, type], bytes | None]] = {
    "missing": lambda d, e: None,
    "empty": lambda d, e: b"",
    "truncated": lambda d, e: d[: len(d) // 2],
    "not-utf8": lambda d, e: b"\xff\xfe" + d,
    "nan": lambda d, e: _prepend(d, e, b"NaN"),
    "infinity": lambda d, e: _prepend(d, e, b"-Infinity"),
    "overflow-1e999": lambda d, e: _prepend(d, e, b"1e999"),
    "huge-integer": lambda d, e: _prepend(d, e, b"9" * 5000),
    "wrong-top-type": lambda d, e: b"[1, 2, 3]" if e is dict else b'{"a": 1}',
    "wrong-field-types": _every_field_a_string,
    "nested-100": lambda d, e: _prepend(d, e, b"[" * 100 + b"]" * 100),
    "nested-bomb": lambda d, e: b"[" * 200_000 + b"]" * 200_000,
    "directory": lambda d, e: b"<dir>",
}


def _break(path: Path, damage: str, original: bytes, expect: type) -> None:
    if path.is_dir():
        path.rmdir()
    data = DAMAGES[damage](original, expect)
    if data is None:
        path.unlink(missing_ok=True)
    elif data == b"<dir>":
        path.unlink(missing_ok=True)
        path.mkdir()
    else:
        path.write_bytes(data)


def check_error(err: OnceflowError, kind: Kind, fix: bool = True) -> None:
    """One line, exit code 2, naming the file (and, for damage at the JSON level, its maker)."""
    msg = str(err)
    assert err.exit_code == 2, f"exit {err.exit_code}: {msg}"
    assert "\n" not in msg and msg.strip(), msg
    assert Path(kind.rel).name in msg, msg
    if fix:
        assert kind.fix in msg, msg


ROWS = [(k, d) for k in KINDS for d in DAMAGES]


@pytest.mark.parametrize(("kind", "damage"), ROWS, ids=[f"{k.name}-{d}" for k, d in ROWS])
def test_loader_row(tmp_path: Path, run_dir: Path, kind: Kind, damage: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path = run / kind.rel
    _break(path, damage, path.read_bytes(), kind.expect)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(OnceflowError) as err:
        kind.load(run)
    # a wrongly typed field is reported by the kind's own reader (file, field, what to do)
    check_error(err.value, kind, fix=damage != "wrong-field-types")
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written


def test_row_count() -> None:
    """Every stage input kind x every damage (the report counts these)."""
    assert len(KINDS) == 9 and len(DAMAGES) == 13 and len(ROWS) == 117


# -------------------------------------------------------------- byte-level random damage
@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` after 1-3 random edits: truncate, flip a byte, insert bytes, delete a span."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        i = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "truncate":
            del out[i:]
        elif op == "flip" and out:
            out[i] = draw(st.integers(0, 255))
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del out[i : i + draw(st.integers(1, 16))]
    return bytes(out)


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_random_byte_damage_loads_or_is_one_line(tmp_path: Path, run_dir: Path, kind: Kind) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path = run / kind.rel
    original = path.read_bytes()

    @settings(max_examples=40, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(st.data())
    def prop(data: st.DataObject) -> None:
        path.write_bytes(data.draw(damaged(original)))
        try:
            kind.load(run)
        except OnceflowError as err:
            check_error(err, kind, fix=False)

    prop()


# ----------------------------------------------------- the real stages: exit 2, no output
STAGE_PARAMS = {
    "base": {"threads": 1},
    "predictor": {"n_samples": 16, "calib_images": 16, "eval_images": 20, "batch_size": 20,
                  "k_folds": 2, "models": ["ridge"]},
}  # fmt: skip


def _search(ws: Workspace) -> tuple[str, list[str], list[str]]:
    outs = [f"search/{T}-out", "metrics/search.json", "plots/search.png", "plots/search.csv"]
    args = ["--target", T, "--supernet", "supernet", "--data", "prepared", "--predictor",
            "predictor", "--latency", f"latency/{T}", "--out", outs[0], "--metrics", outs[1],
            "--plot", outs[2], "--plot-data", outs[3]]  # fmt: skip
    return "search", args, outs


def _package(ws: Workspace) -> tuple[str, list[str], list[str]]:
    outs = [f"artifacts/{T}-out", "metrics/package.json"]
    args = ["--target", T, "--supernet", "supernet", "--data", "prepared", "--selection",
            f"search/{T}/selected.json", "--latency", f"latency/{T}", "--predictor",
            "predictor", "--out", outs[0], "--metrics", outs[1]]  # fmt: skip
    return "package", args, outs


def _predictor(ws: Workspace) -> tuple[str, list[str], list[str]]:
    outs = ["models/predictor", "metrics/predictor.json", "plots/p.png", "plots/p.csv"]
    args = [
        "--supernet",
        "supernet",
        "--data",
        "prepared",
        "--dataset",
        "arch_acc.csv",
        "--out",
        outs[0],
        "--metrics",
        outs[1],
        "--plot",
        outs[2],
        "--plot-data",
        outs[3],
    ]
    return "predictor", args, outs


def _latency(ws: Workspace) -> tuple[str, list[str], list[str]]:
    outs = [f"latency/{T}-out", "metrics/latency.json", "plots/l.png", "plots/l.csv"]
    args = ["--target", T, "--supernet", "supernet", "--data", "prepared", "--out", outs[0],
            "--metrics", outs[1], "--plot", outs[2], "--plot-data", outs[3]]  # fmt: skip
    return "latency_table", args, outs


def _train(ws: Workspace) -> tuple[str, list[str], list[str]]:
    outs = ["models/supernet-out", "metrics/supernet.json", "live"]
    args = ["--data", "prepared", "--out", outs[0], "--metrics", outs[1], "--live", outs[2],
            "--checkpoints", "ckpt"]  # fmt: skip
    return "train_supernet", args, outs


def _specialize(ws: Workspace) -> tuple[str, list[str], list[str]]:
    outs = ["metrics/spec.json", "plots/spec.png", "plots/spec.csv"]
    args = ["--supernet", "supernet", "--data", "prepared", "--latency", "latency", "--search",
            "search", "--artifacts", "artifacts", "--metrics", outs[0], "--plot", outs[1],
            "--plot-data", outs[2]]  # fmt: skip
    return "specialize_report", args, outs


def _publish(ws: Workspace) -> tuple[str, list[str], list[str]]:
    ws.params["publish"] = {"uri": "file://published"}
    return "publish", ["--artifacts", "artifacts", "--metrics", "metrics/publish.json"], [
        "metrics/publish.json", "published"]  # fmt: skip


# Every stage input (a kind a stage reads before its work), through the stage entry.
STAGE_INPUTS = [
    (_train, "prepared-meta"),
    (_latency, "supernet-space"),
    (_predictor, "prepared-meta"),
    (_predictor, "supernet-space"),
    (_search, "supernet-space"),
    (_search, "predictor-model"),
    (_search, "latency-lut"),
    (_search, "latency-estimator"),
    (_package, "supernet-space"),
    (_package, "search-selection"),
    (_package, "prepared-meta"),
    (_specialize, "latency-validation"),
    (_specialize, "search-selection"),
    (_publish, "package-manifest"),
]
STAGE_DAMAGES = ("truncated", "not-utf8", "wrong-top-type")
# A few as real subprocesses: exit code 2 and no traceback seen from outside.
SUBPROCESS = [
    (_search, "latency-lut", "truncated"),
    (_search, "predictor-model", "nested-bomb"),
    (_package, "search-selection", "not-utf8"),
    (_predictor, "prepared-meta", "nan"),
    (_latency, "supernet-space", "nested-100"),
    (_train, "prepared-meta", "empty"),
]
STAGE_ROWS = [(s, k, d, False) for s, k in STAGE_INPUTS for d in STAGE_DAMAGES]
STAGE_ROWS += [(s, k, d, True) for s, k, d in SUBPROCESS]


@pytest.mark.parametrize(
    ("stage", "kind_name", "damage", "subprocess"),
    STAGE_ROWS,
    ids=[f"{s.__name__[1:]}-{k}-{d}" + ("-subprocess" if sp else "") for s, k, d, sp in STAGE_ROWS],
)
def test_stage_row(tmp_path: Path, run_dir: Path, stage, kind_name: str, damage: str,
                   subprocess: bool) -> None:  # fmt: skip
    ws = Workspace(tmp_path, params=json.loads(json.dumps(STAGE_PARAMS)))
    shutil.copytree(run_dir, tmp_path, dirs_exist_ok=True)
    kind = next(k for k in KINDS if k.name == kind_name)
    path = tmp_path / kind.rel
    _break(path, damage, path.read_bytes(), kind.expect)
    module, args, outs = stage(ws)
    proc = run_stage(ws, module, args, in_process=not subprocess)
    row = Row(kind_name, lambda w: None, Path(kind.rel).name)
    check(proc, row, [tmp_path / o for o in outs], tmp_path)
    assert kind.fix.split("@")[0] in proc.stderr


def test_stage_row_count() -> None:
    assert len(STAGE_ROWS) == 14 * 3 + 6


@pytest.mark.parametrize("damage", ["truncated", "not-utf8", "nested-bomb", "huge-integer"])
def test_the_report_skips_a_damaged_metrics_file(tmp_path: Path, damage: str) -> None:
    """The report reads whatever metrics exist: a damaged one is skipped, never a traceback."""
    from onceflow.metrics import read_metrics
    from onceflow.report.collect import read_json_or_none

    path = tmp_path / "metrics.json"
    path.write_bytes(DAMAGES[damage](b'{"top1": 0.9, "images": 10}', dict) or b"")
    assert read_json_or_none(path) is None
    assert read_metrics(path) is None
