"""One identity for code: what is resumed across runs is keyed by the import closure of the code
that made it (onceflow.identity), so an edit to any module in it recomputes, never reuses.

- training: an edit to a module the training entry imports (data/prepared.py, config.py, io.py)
  changes the fingerprint, and a rerun trains from scratch instead of resuming the finished run;
- the predictor: an edit to the measuring code (BN recalibration, input resizing, SubnetMeter)
  re-measures every row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onceflow import identity
from onceflow.predictor.dataset import MeasureSettings, sample_archs
from onceflow.predictor.pipeline import MEASURING_MODULE, measurement_context, measuring_code
from onceflow.supernet import SearchSpace
from onceflow.supernet.supernet import load_supernet
from onceflow.train.resume import TRAINING_MODULE, code_digest
from tests.conftest import REPO_ROOT, tool_env, write_prepared
from tests.predictor.conftest import write_supernet
from tests.predictor.test_identity import _measure_all


def _copy_library(dest: Path) -> dict[str, Path]:
    """A copy of src/onceflow under ``dest``; returns its package roots."""
    shutil.copytree(REPO_ROOT / "src" / "onceflow", dest / "onceflow",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return {"onceflow": dest}


def _edit(roots: dict[str, Path], rel: str) -> None:
    with open(roots["onceflow"] / "onceflow" / rel, "a", encoding="utf-8") as fh:
        fh.write("\n# an edit\n")


def test_closure_digest_sees_every_module_in_the_closure_and_nothing_else(tmp_path: Path) -> None:
    roots = _copy_library(tmp_path / "src")
    closure = {f.relative_to(roots["onceflow"]).as_posix() for f in
               identity.import_closure(TRAINING_MODULE, roots)}  # fmt: skip
    # what the issue named: data/prepared.py, config.py and io.py are training code too
    assert {"onceflow/data/prepared.py", "onceflow/config.py", "onceflow/io.py",
            "onceflow/train/loop.py", "onceflow/supernet/dwconv.py"} <= closure  # fmt: skip
    assert "onceflow/train/finetune.py" not in closure  # packaging's fine-tune
    before = code_digest(roots)
    assert code_digest(roots) == before  # deterministic
    assert code_digest(_copy_library(tmp_path / "moved")) == before  # a moved tree keeps it
    _edit(roots, "latency/lut.py")  # outside the closure
    assert code_digest(roots) == before
    for rel in ("data/prepared.py", "config.py", "io.py"):
        _edit(roots, rel)
        after = code_digest(roots)
        assert after != before, rel
        before = after
    # the predictor's measuring code: SubnetMeter, BN recalibration, input resizing
    measuring = {f.relative_to(roots["onceflow"]).as_posix() for f in
                 identity.import_closure(MEASURING_MODULE, roots)}  # fmt: skip
    assert {"onceflow/predictor/dataset.py", "onceflow/supernet/supernet.py",
            "onceflow/inputs.py"} <= measuring  # fmt: skip
    # training is not measuring code
    assert not [f for f in measuring if f.startswith("onceflow/train/")]


_TRAIN = """
import sys
import torch
import onceflow
from onceflow.data.prepared import load_prepared
from onceflow.train.loop import train_supernet
from tests.supernet.helpers import tiny_space
from tests.train.helpers import tiny_train

torch.set_num_threads(1)
assert onceflow.__file__.startswith(sys.argv[3]), onceflow.__file__
cfg = tiny_train(epoch_eval_images=0, phases=[{"name": "all", "epochs": 0.5, "lr": 0.1}])
r = train_supernet(load_prepared(sys.argv[1]), tiny_space(), cfg, checkpoint_dir=sys.argv[2],
                   progress=False)
print("steps_run", r.steps_run)
"""


def _train(src: Path, data: Path, ckpt: Path) -> int:
    env = tool_env(OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(REPO_ROOT)])
    proc = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(data), str(ckpt), str(src)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split("steps_run")[-1])


@pytest.mark.slow
def test_an_edit_to_training_code_retrains_instead_of_resuming(tmp_path: Path) -> None:
    """The issue's case: a run finished, then data/prepared.py (imported by training, outside
    train/ and supernet/) changed; the rerun must train, not re-emit the old weights."""
    src = tmp_path / "src"
    roots = _copy_library(src)
    data, ckpt = write_prepared(tmp_path / "data", n_per_class=8), tmp_path / "ckpt"
    first = _train(src, data, ckpt)
    assert first > 0
    assert _train(src, data, ckpt) == 0  # same code: the finished run is resumed
    _edit(roots, "data/prepared.py")
    assert _train(src, data, ckpt) == first  # trained from scratch, in its own identity folder
    assert len([d for d in ckpt.iterdir() if d.is_dir()]) == 2


def test_an_edit_to_the_measuring_code_remeasures_every_row(
    tmp_path: Path, tiny_space: SearchSpace
) -> None:
    roots = _copy_library(tmp_path / "src")
    net_dir = write_supernet(tmp_path / "supernet", tiny_space)
    data = write_prepared(tmp_path / "data", n_per_class=4)
    net, s = load_supernet(net_dir), MeasureSettings(20, 10, 8, 0, None, 0)
    archs = sample_archs(tiny_space, 5, seed=0)
    csv = tmp_path / "arch_acc.csv"

    def context() -> str:
        return measurement_context(net_dir, net, data, s, code=measuring_code(roots))

    ctx = context()
    assert measurement_context(net_dir, net, data, s) != measurement_context(
        net_dir, net, data, s, code="another"
    )
    assert _measure_all(archs, csv, ctx) == 5
    assert _measure_all(archs, csv, context()) == 0  # resumed
    _edit(roots, "registry/index.py")  # not measuring code: rows are kept
    assert context() == ctx
    for rel in ("supernet/supernet.py", "inputs.py", "predictor/dataset.py"):
        _edit(roots, rel)  # BN recalibration, input resizing, SubnetMeter
        new = context()
        assert new != ctx and _measure_all(archs, csv, new) == 5, rel
        ctx = new
