"""Bad artifacts between stages: the supernet model dir (read by latency/predictor/search/
package), the prepared-data dir, training checkpoints and the predictor's CSV.

A broken input a stage cannot use is exit 2 with one line naming the file; a broken
*resumable* input (a checkpoint, the CSV) is skipped with a warning naming it, and the stage
recomputes what it held and finishes (exit 0)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from onceflow.predictor.dataset import COLUMNS
from onceflow.supernet import SearchSpace, Supernet, save_supernet
from tests.conftest import tiny_supernet_config
from tests.hostile.harness import Row, Workspace, check, run_stage
from tests.supernet.helpers import TINY_SPACE
from tests.train.helpers import TINY_TRAIN


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _space(**over) -> SearchSpace:
    return SearchSpace(tiny_supernet_config().model_copy(update=over), 1, 10, 28)


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("supernet") / "supernet"
    torch.manual_seed(0)
    save_supernet(Supernet(_space()), d)
    return d


def _file(name: str, fn):
    """Rewrite ``<supernet>/<name>`` with ``fn(path)``."""
    return lambda ws: fn(ws.path("supernet") / name)


def _garbage(p: Path) -> None:
    p.write_bytes(b"\x00garbage\xff" * 100)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _torch_save(obj_fn):
    return lambda p: torch.save(obj_fn(), p)


def _text(text: str):
    return lambda p: p.write_text(text)


def _unlink(p: Path) -> None:
    p.unlink()


def _foreign_weights() -> dict:
    return Supernet(_space(stem_channels=12)).state_dict()


SUPERNET = [
    Row("weights-missing", _file("supernet.pt", _unlink), "missing supernet.pt"),
    Row("space-missing", _file("space.json", _unlink), "missing space.json"),
    Row("weights-garbage", _file("supernet.pt", _garbage), "unreadable weights"),
    Row("weights-truncated", _file("supernet.pt", _truncate), "supernet.pt"),
    Row("weights-malicious-pickle", _file("supernet.pt", _torch_save(_Evil)),
        "unreadable weights", subprocess=True),
    Row("weights-not-a-dict", _file("supernet.pt", _torch_save(lambda: [1, 2, 3])),
        "not a state dict"),
    Row("weights-of-another-space", _file("supernet.pt", _torch_save(_foreign_weights)),
        "does not match"),
    Row("space-not-json", _file("space.json", _text("{not json")), "not valid JSON"),
    Row("space-foreign-json", _file("space.json", _text('{"hello": 1}')), "format_version"),
    Row("space-bad-config", _file("space.json", lambda p: p.write_text(json.dumps(
        {**json.loads(p.read_text()), "config": {"kernels": "x"}}))), "space.json"),
]  # fmt: skip


@pytest.mark.parametrize("row", SUPERNET, ids=[r.id for r in SUPERNET])
def test_supernet_dir(tmp_path: Path, supernet_dir: Path, row: Row) -> None:
    """latency_table reads the supernet first; predictor, search and package use the same
    loader."""
    ws = Workspace(tmp_path, params={"base": {"threads": 1}})
    shutil.copytree(supernet_dir, ws.path("supernet"))
    row.build(ws)
    outs = [
        "latency/ort-cpu",
        "metrics/latency.json",
        "plots/latency.png",
        "metrics/latency.details.json",  # the stage's default: next to --metrics
        "plots/latency.csv",
    ]
    args = ["--target", "ort-cpu", "--supernet", "supernet", "--data", "data/prepared"]
    args += ["--out", outs[0], "--metrics", outs[1], "--plot", outs[2], "--plot-data", outs[4]]
    proc = run_stage(ws, "latency_table", args, in_process=not row.subprocess)
    check(proc, row, [tmp_path / o for o in outs], tmp_path)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ training: data and ckpts
TRAIN_PARAMS = {
    "base": {"seed": 0, "threads": 1, "device": "cpu"},
    "supernet": TINY_SPACE,
    "train": dict(TINY_TRAIN, phases=[{"name": "all", "epochs": 0.2, "lr": 0.1}],
                  epoch_eval_images=20, bn_calib_images=40, eval_batch_size=20),
}  # fmt: skip
TRAIN_OUTS = [
    "models/supernet",
    "metrics/supernet.json",
    "live",
    "metrics/supernet.details.json",  # the stage's default: next to --metrics
]


def _train_args() -> list[str]:
    return ["--data", "prepared", "--out", TRAIN_OUTS[0], "--metrics", TRAIN_OUTS[1],
            "--live", TRAIN_OUTS[2], "--checkpoints", "ckpt"]  # fmt: skip


def _prep(name: str, fn):
    return lambda ws: fn(ws.path("prepared") / name)


def _npy(arr_fn):
    return lambda p: np.save(p, arr_fn())


def _objects() -> np.ndarray:
    return np.array([{"a": 1}, None], dtype=object)


PREPARED = [
    Row("meta-not-json", _prep("meta.json", _text("{")), "meta.json", subprocess=True),
    Row("meta-missing-keys", _prep("meta.json", _text('{"classes": []}')), "meta.json"),
    Row("npy-garbage", _prep("train_images.npy", _garbage), "train arrays are unreadable"),
    Row("npy-pickled-objects", _prep("val_labels.npy", _npy(_objects)),
        "val arrays are unreadable"),
    Row("npy-wrong-shape", _prep("train_images.npy", _npy(lambda: np.zeros((4, 32, 32, 1),
                                                                            np.uint8))),
        "expected uint8"),
    Row("labels-count-mismatch", _prep("test_labels.npy", _npy(lambda: np.zeros(3, np.int64))),
        "one integer label per image"),
    Row("split-missing", _prep("val_images.npy", _unlink), "missing val_images.npy"),
]  # fmt: skip


def _run_fp(prepared: Path) -> str:
    """The fingerprint of the training run these tests start (its checkpoint folder's name)."""
    from onceflow.config import parse_params
    from onceflow.data.prepared import load_prepared
    from onceflow.train.resume import fingerprint

    params = parse_params(TRAIN_PARAMS)
    data = load_prepared(prepared)
    m = data.meta
    space = SearchSpace(params.supernet, m.channels, m.n_classes, min(m.height, m.width))
    return fingerprint(space, params.train, 0, data, 1)


def _ckpt(name: str, fn):
    """Put a file in this run's own checkpoint folder (``ckpt/<fingerprint>/``)."""

    def build(ws: Workspace) -> None:
        d = ws.path("ckpt") / _run_fp(ws.path("prepared"))
        d.mkdir(parents=True, exist_ok=True)
        fn(d / name)

    return build


def _fingerprinted(bad_model: dict):
    """A checkpoint carrying this run's fingerprint whose model state does not fit."""

    def make(p: Path) -> None:
        from onceflow.train.checkpoint import encode_checkpoint

        fp = _run_fp(p.parent.parent.parent / "prepared")
        # A well-formed file (its digest verifies) that carries this run's identity.
        p.write_bytes(encode_checkpoint({"fingerprint": fp, "model": bad_model}))

    return make


CHECKPOINTS = [
    Row("ckpt-garbage", _ckpt("ckpt-00000005.pt", _garbage), "ckpt-00000005.pt", code=0),
    Row("ckpt-truncated", _ckpt("ckpt-00000003.pt", lambda p: (
        torch.save({"model": {"w": torch.zeros(1000)}}, p), _truncate(p))), "ckpt-00000003.pt",
        code=0),
    Row("ckpt-malicious-pickle", _ckpt("ckpt-00000004.pt", _torch_save(_Evil)),
        "ckpt-00000004.pt", code=0, subprocess=True),
    Row("ckpt-other-run", _ckpt("ckpt-00000002.pt", _torch_save(
        lambda: {"fingerprint": "another-run", "model": {}})), "belong to other params/data",
        code=0),
    Row("ckpt-crafted-fingerprint", _ckpt("ckpt-00000006.pt", _fingerprinted({"x": 1})),
        "ckpt-00000006.pt: carries this run's fingerprint"),
]  # fmt: skip


@pytest.mark.parametrize("row", PREPARED + CHECKPOINTS, ids=[r.id for r in PREPARED + CHECKPOINTS])
def test_training_inputs(tmp_path: Path, prepared: Path, row: Row) -> None:
    ws = Workspace(tmp_path, params=json.loads(json.dumps(TRAIN_PARAMS)))
    shutil.copytree(prepared, ws.path("prepared"))
    row.build(ws)
    proc = run_stage(ws, "train_supernet", _train_args(), in_process=not row.subprocess)
    check(proc, row, [tmp_path / o for o in TRAIN_OUTS], tmp_path)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------ the predictor CSV
PREDICTOR_PARAMS = {
    "base": {"threads": 1},
    "predictor": {"n_samples": 16, "calib_images": 16, "eval_images": 20, "batch_size": 20,
                  "k_folds": 2, "curve_points": 2, "models": ["ridge"]},
}  # fmt: skip
CSV = "arch_acc.csv"
HEADER = ",".join(COLUMNS) + "\n"  # the library's own layout


def _csv(data: bytes):
    return lambda ws: ws.path(CSV).write_bytes(data)


CSV_ROWS = [
    Row("csv-binary-garbage", _csv(b"\x89\xff\x00\x13garbage" * 50), "not a text CSV", code=0),
    Row("csv-nul-byte", _csv(HEADER.encode() + b"r1,0.5\x00,0.5,0.5,1,1,1,1,1,1,c\n"),
        "not a text CSV",
        code=0),
    Row("csv-malformed-rows",
        _csv(HEADER.encode() + b'r1,nan,0,0,1,1,1,1,1,1,c\n"unterminated,1\n'), "dropped", code=0),
    Row("csv-foreign-columns", _csv(b"model,score\nx,1\n"), "columns", code=0),
    Row("csv-is-a-directory", lambda ws: ws.path(CSV).mkdir(), "a directory where",
        subprocess=True),
]  # fmt: skip


@pytest.mark.parametrize("row", CSV_ROWS, ids=[r.id for r in CSV_ROWS])
def test_predictor_csv(tmp_path: Path, supernet_dir: Path, prepared: Path, row: Row) -> None:
    ws = Workspace(tmp_path, params=json.loads(json.dumps(PREDICTOR_PARAMS)))
    shutil.copytree(supernet_dir, ws.path("supernet"))
    shutil.copytree(prepared, ws.path("prepared"))
    row.build(ws)
    outs = [
        "models/predictor",
        "metrics/predictor.json",
        "plots/predictor.png",
        "metrics/predictor.details.json",  # the stage's default: next to --metrics
        "plots/predictor.csv",
    ]
    args = ["--supernet", "supernet", "--data", "prepared", "--dataset", CSV]
    args += ["--out", outs[0], "--metrics", outs[1], "--plot", outs[2], "--plot-data", outs[4]]
    proc = run_stage(ws, "predictor", args, in_process=not row.subprocess)
    check(proc, row, [tmp_path / o for o in outs], tmp_path)
    if row.code == 0:  # the CSV was rewritten and holds only fresh, well-formed rows
        text = (tmp_path / CSV).read_text()
        assert text.startswith(HEADER) and "\0" not in text and text.count("\n") == 17
