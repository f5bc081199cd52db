"""Bad params.yaml: the first stage (prepare) refuses the whole file before any work, even when
the mistake sits in a section only a later stage reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.conftest import PREPARE_OUTS, copy_source, prepare_args
from tests.hostile.harness import SECRET, Row, Workspace, check, run_stage


def _set(section: str, **values: object):
    def build(ws: Workspace) -> None:
        ws.params.setdefault(section, {}).update(values)

    return build


def _text(text: str):
    def build(ws: Workspace) -> None:
        ws.params_text = text

    return build


def _bytes(data: bytes):
    def build(ws: Workspace) -> None:
        ws.params_text = data.decode("utf-8", errors="surrogateescape")

    return build


def _target(name: str, **entry: object):
    return _set("latency", targets={name: entry})


def _budgets(entry: object):
    """ort-cpu's own budgets (latency.targets.<name>.budgets)."""

    return _target("ort-cpu", budgets=entry)


def _phases(*phases: dict):
    return _set("train", phases=list(phases))


LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

ROWS = [
    # keys and types
    Row("unknown-key", _set("data", val_fracton=0.2), "data.val_fracton: unknown key"),
    Row("unknown-section", _set("tarin", epochs=1), "tarin: unknown key", subprocess=True),
    Row("unknown-key-later-section", _set("package", opsett=17), "package.opsett"),
    Row("wrong-type", _set("base", threads="two"), "base.threads"),
    Row("wrong-type-list", _set("supernet", kernels="3,5"), "supernet.kernels"),
    Row("section-not-mapping", _set("search", nsga=[1, 2]), "search.nsga"),
    Row("bad-literal", _set("base", device="gpu"), "base.device"),
    # ranges and finiteness
    Row("out-of-range", _set("data", val_fraction=1.5), "data.val_fraction"),
    Row("negative-seed", _set("base", seed=-1), "base.seed"),
    Row("huge-seed", _set("base", seed=2**70), "base.seed"),
    Row("nan", _text("predictor:\n  mlp_lr: .nan\n"), "predictor.mlp_lr"),
    Row("inf", _text("train:\n  weight_decay: .inf\n"), "train.weight_decay"),
    Row("nan-in-list", _text("supernet:\n  expands: [2.0, .nan]\n"), "supernet.expands"),
    Row("even-kernel", _set("supernet", kernels=[3, 4]), "kernels must be odd"),
    Row("widths-without-full", _set("supernet", widths=[0.5, 0.75]), "widths must include 1.0"),
    Row("empty-choices", _set("supernet", depths=[]), "depths"),
    Row("duplicate-phase", _phases({"name": "a", "epochs": 1, "lr": 0.1},
                                   {"name": "a", "epochs": 1, "lr": 0.1}), "unique"),
    # target names
    Row("target-upper-case", _target("Ort-CPU"), "'Ort-CPU'"),
    Row("target-slash", _target("ort/cpu"), "'ort/cpu'"),
    Row("target-dotdot", _target(".."), "'..'"),
    Row("target-underscore", _target("ort_cpu"), "'ort_cpu'"),
    Row("tensorrt-on-cpu", _target("trt", backend="tensorrt", device="cpu"), "tensorrt needs"),
    Row("torch-int8", _target("t", backend="torch", precision="int8"), "int8 needs backend"),
    Row("ort-fp16", _target("ort", precision="fp16"), "onnxruntime targets run fp32 or int8"),
    # budgets
    Row("budget-old-place", _set("search", budgets={"ort-cpu": {"unit": "ms", "values": [1.0]}}),
        "search.budgets moved"),
    Row("budget-bad-unit", _budgets({"unit": "s", "values": [1.0]}),
        "latency.targets.ort-cpu.budgets.unit"),
    Row("budget-empty", _budgets({"unit": "ms", "values": []}),
        "latency.targets.ort-cpu.budgets.values"),
    Row("budget-zero-ms", _budgets({"unit": "ms", "values": [0]}), "ms budgets"),
    Row("budget-fraction-over-1", _set("search", default_budgets={"values": [0.5, 2]}),
        "fraction budgets"),
    Row("budget-negative", _budgets({"unit": "ms", "values": [-1]}),
        "latency.targets.ort-cpu.budgets.values[0]"),
    Row("budget-duplicates", _budgets({"values": [0.5, 0.5]}), "distinct"),
    # cross-section rules
    Row("resolution-over-image", _set("supernet", resolutions=[28, 32]), "supernet.resolutions"),
    Row("subset-too-small", _set("data", max_train=5), "data.max_train"),
    Row("image-size-wrong-source", _set("data", image_size=32), "data.image_size"),
    Row("batch-under-processes", _set("train", processes=4, batch_size=2), "train.batch_size"),
    Row("nccl-on-cpu", _set("train", ddp_backend="nccl"), "nccl"),
    Row("nodes-reversed-range", _set("train", nodes="4:2"), "train.nodes"),
    Row("nodes-not-a-range", _set("train", nodes="two"), "train.nodes"),
    Row("rdzv-endpoint-no-port", _set("train", rdzv_endpoint="10.0.0.5"), "train.rdzv_endpoint"),
    Row("batch-under-node-ranks", _set("train", nodes=4, processes=2, batch_size=6),
        "train.batch_size"),
    Row("path-nul-byte", _set("data", path="data\x00set"), "data.path"),
    Row("predictor-too-few-samples", _set("predictor", n_samples=12), "predictor.n_samples"),
    # the file itself
    Row("invalid-yaml", _text("base:\n  seed: [1,\n"), "not valid YAML at line"),
    Row("duplicate-key", _text("data:\n  val_fraction: 0.2\ndata:\n  max_train: 100\n"),
        "'data' appears twice"),
    Row("top-level-list", _text("- base\n- data\n"), "top level must be a mapping"),
    Row("not-utf8", _bytes(b"base:\n  seed: 1 # caf\xe9\n"), "not UTF-8"),
    Row("alias-bomb", _text(LAUGHS), "aliases"),
    Row("python-tag", _text("base: !!python/object/apply:os.system ['true']\n"), "not valid YAML"),
    # secrets never echoed back
    Row("endpoint-with-credentials",
        _set("publish", endpoint_url=f"http://AKIAHOSTILE00000:{SECRET}@127.0.0.1:9000"),
        "credentials do not belong in the URL"),
    Row("unknown-key-holding-secret", _set("publish", secret_key=SECRET), "publish.secret_key"),
    Row("secret-url-in-wrong-type", _set("publish", max_attempts=f"s3://AK:{SECRET}@bucket/p"),
        "publish.max_attempts"),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_params(tmp_path: Path, sources: dict[str, Path], row: Row) -> None:
    ws = Workspace(tmp_path)
    copy_source(ws, sources["fashion-mnist"], "fashion-mnist")
    ws.params["data"]["val_fraction"] = 0.2
    row.build(ws)
    proc = run_stage(ws, "prepare", prepare_args(), in_process=not row.subprocess)
    check(proc, row, [tmp_path / o for o in PREPARE_OUTS], tmp_path)


def test_missing_params_file(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, params_missing=True)
    row = Row("missing", lambda ws: None, "params file not found")
    proc = run_stage(ws, "prepare", prepare_args(), in_process=False)
    check(proc, row, [tmp_path / o for o in PREPARE_OUTS], tmp_path)
