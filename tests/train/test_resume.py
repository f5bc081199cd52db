"""A run's identity and its checkpoints, without training: what the fingerprint covers and what
it ignores, the code digest, the run state's round trip, the identity folders and what resume
does with its own, other runs' and broken checkpoints (targets of `make mutation` on
train/resume.py; current behaviour, before the code identity of issue 24)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import onceflow.supernet
import onceflow.train
from onceflow.data.prepared import data_identity, load_prepared
from onceflow.errors import DataError
from onceflow.supernet import Supernet
from onceflow.train import checkpoint as ckpt
from onceflow.train.distributed import DistContext
from onceflow.train.resume import (
    RunState,
    code_digest,
    fingerprint,
    identity_dir,
    resume,
    world_key,
)
from onceflow.train.schedule import make_plan
from tests.supernet.helpers import tiny_space
from tests.train.helpers import tiny_train

MAIN = DistContext()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data(tiny_prepared: Path):
    return load_prepared(tiny_prepared)


def _fp(prepared, **over) -> str:
    args = {"space": tiny_space(), "cfg": tiny_train(), "seed": 0, "data": prepared, "world": 1}
    args.update(over)
    return fingerprint(**args)


# ------------------------------------------------------------------------------ identity
def test_world_key() -> None:
    assert world_key(tiny_train(nodes=2), 4) == 4
    assert world_key(tiny_train(nodes="2:2"), 4) == 4
    assert world_key(tiny_train(nodes="1:3"), 4) == "elastic"


def test_fingerprint_covers_what_changes_the_weights(data) -> None:
    base = _fp(data)
    assert len(base) == 16 and int(base, 16) >= 0
    assert _fp(data) == base
    changed = {
        "space": _fp(data, space=tiny_space(kernels=[3])),
        "train": _fp(data, cfg=tiny_train(batch_size=20)),
        "seed": _fp(data, seed=1),
        "world": _fp(data, world=2),
        "elastic": _fp(data, world="elastic"),
        "device": _fp(data, device="meta"),
        "data": _fp(data, data=replace(data, meta=replace(data.meta, content_sha256="0" * 64))),
    }
    assert len(set(changed.values()) | {base}) == len(changed) + 1, changed
    assert _fp(data, device=torch.device("cpu")) == base == _fp(data, device="cpu")
    assert _fp(data, device="cuda:0") == _fp(data, device="cuda:1") != base


def test_fingerprint_counts_the_train_split(data) -> None:
    fewer = replace(data, train=replace(data.train, images=data.train.images[:-1],
                                        labels=data.train.labels[:-1]))  # fmt: skip
    assert _fp(data, data=fewer) != _fp(data)


@pytest.mark.parametrize(
    "launch",
    [
        {"checkpoint_every_steps": 7},
        {"keep_checkpoints": 9},
        {"processes": 2},
        {"nodes": 3},
        {"rdzv_endpoint": "10.0.0.1:29400"},
        {"max_restarts": 5},
        {"rdzv_timeout_s": 123},
        {"rdzv_last_call_s": 7},
    ],
)
def test_fingerprint_ignores_cadence_and_launch(data, launch: dict) -> None:
    assert _fp(data, cfg=tiny_train(**launch)) == _fp(data)


def _copied_library(tmp_path: Path) -> Path:
    """A copy of onceflow's sources under ``tmp_path`` (a root for code_digest)."""
    src = Path(next(iter(onceflow.__path__)))
    shutil.copytree(src, tmp_path / "onceflow", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "onceflow"


def test_code_digest_follows_training_code_only(tmp_path: Path, monkeypatch) -> None:
    """The import closure of training's entry: its files' bytes and names, wherever the tree
    lies; files outside it do not count."""
    real = code_digest()
    assert len(real) == 64 and code_digest() == real
    lib = _copied_library(tmp_path)
    roots = {"onceflow": tmp_path}
    base = code_digest(roots)
    assert base == real  # the same bytes under the same names
    (lib / "report" / "page.py").write_text("# the run report: not training\n")
    (lib / "train" / "notes.txt").write_text("not python")
    (lib / "train" / "zz_unused.py").write_text("X = 1\n")  # imported by nothing
    assert code_digest(roots) == base
    seen = {base}
    for edit in ("train/loop.py", "supernet/layers.py", "data/prepared.py", "config.py"):
        path = lib / edit
        path.write_text(path.read_text() + "\n# edited\n")
        seen.add(code_digest(roots))
    assert len(seen) == 5
    # Another installed torch (its distribution's version, as `installed_versions` reads it).
    import onceflow.train.resume as resume

    versions = resume.installed_versions(resume.TRAINING_LIBRARIES)
    monkeypatch.setattr(resume, "installed_versions", lambda names: {**versions, "torch": "0.0"})
    assert code_digest(roots) not in seen


# ------------------------------------------------------------------------------ run state
def _session(data, **over) -> RunState:
    cfg = tiny_train(**over)
    torch.manual_seed(0)
    return RunState(Supernet(tiny_space()), cfg, make_plan(len(data.train), cfg))


def test_run_state_starts_at_zero_and_round_trips(data) -> None:
    s = _session(data)
    assert (s.phase, s.step_in_phase, s.global_step, s.history, s.seconds) == (0, 0, 0, [], 0.0)
    assert s.loss_sums == [0.0, 0.0, 0] and s.optimizer is None and s.scheduler is None
    s.start_phase()
    assert s.optimizer.param_groups[0]["initial_lr"] == 0.1
    s.phase, s.step_in_phase, s.global_step = 0, 4, 9
    s.history, s.seconds, s.loss_sums = [{"epoch": 1}], 2.5, [1.0, 2.0, 3]
    with torch.no_grad():
        next(s.net.parameters()).add_(1.0)
    s.scheduler.step()
    st = s.state("fp1")
    assert st["fingerprint"] == "fp1" and st["loss_sums"] == [1.0, 2.0, 3]
    assert st["loss_sums"] is not s.loss_sums
    assert set(st) == {"fingerprint", "model", "optimizer", "scheduler", "phase", "step_in_phase",
                       "global_step", "history", "seconds", "loss_sums", "rng_torch"}  # fmt: skip
    expected_rng = torch.get_rng_state()
    torch.manual_seed(99)
    t = _session(data)
    t.restore(ckpt.decode_state(ckpt.encode_state(st)))
    assert (t.phase, t.step_in_phase, t.global_step) == (0, 4, 9)
    assert (t.history, t.seconds, t.loss_sums) == ([{"epoch": 1}], 2.5, [1.0, 2.0, 3])
    assert type(t.seconds) is float and type(t.global_step) is int
    assert torch.equal(torch.get_rng_state(), expected_rng)
    assert t.scheduler.state_dict()["last_epoch"] == s.scheduler.state_dict()["last_epoch"] == 1
    a, b = s.net.state_dict(), t.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_later_phase_gets_its_own_lr(data) -> None:
    phases = [{"name": "a", "epochs": 1, "lr": 0.1}, {"name": "b", "epochs": 1, "lr": 0.03}]
    s = _session(data, phases=phases)
    s.phase = 1
    s.start_phase()
    assert s.optimizer.param_groups[0]["initial_lr"] == 0.03


# ------------------------------------------------------------------------------ folders
def test_identity_dir(tmp_path: Path, caplog) -> None:
    assert identity_dir(None, "fp", MAIN) is None
    root = tmp_path / "ckpt"
    root.mkdir()
    ckpt.save_checkpoint(root, {"x": 1}, step=1)
    old = root / "oldrun"
    old.mkdir()
    (old / "f").write_text("x")
    month = time.time() - 40 * 86400
    os.utime(old / "f", (month, month))
    os.utime(old, (month, month))
    recent = root / "recent"
    recent.mkdir()
    assert identity_dir(root, "fp", DistContext(rank=1, world_size=2)) == root / "fp"
    assert ckpt.checkpoint_files(root) and old.exists()  # other ranks touch nothing
    with caplog.at_level(logging.WARNING, logger="onceflow.train.resume"):
        assert identity_dir(root, "fp", MAIN) == root / "fp"
    assert not ckpt.checkpoint_files(root) and not old.exists() and recent.exists()
    assert f"checkpoints directly in {root} predate per-identity folders" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onceflow.train.resume"):
        identity_dir(root, "fp", MAIN)
    assert "predate" not in caplog.text


# ------------------------------------------------------------------------------ resume
def test_resume_own_other_and_none(data, tmp_path: Path, caplog) -> None:
    s = _session(data)
    s.start_phase()
    s.global_step, s.step_in_phase = 5, 5
    d = tmp_path / "fp"
    assert resume(_session(data), None, "fp", MAIN, CPU) is False
    assert resume(_session(data), d, "fp", MAIN, CPU) is False  # nothing there yet
    ckpt.save_checkpoint(d, s.state("fp"), step=5)
    t = _session(data)
    with caplog.at_level(logging.INFO, logger="onceflow.train.resume"):
        assert resume(t, d, "fp", MAIN, CPU) is True
    assert t.global_step == 5 and "(phase 0, step 5)" in caplog.text
    assert "elastic restart" not in caplog.text
    assert resume(_session(data), d, "fp", DistContext(rank=1, world_size=1), CPU) is False
    assert ckpt.checkpoint_files(d)  # a non-main rank neither reads nor clears
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="onceflow.train.resume"):
        assert resume(_session(data), d, "another", MAIN, CPU) is False
    assert not ckpt.checkpoint_files(d)  # another run's files are cleared
    assert f"checkpoints in {d} are unreadable or belong to other params" in caplog.text


def test_resume_logs_an_elastic_restart(data, tmp_path: Path, caplog) -> None:
    s = _session(data)
    s.start_phase()
    s.global_step = 7
    ckpt.save_checkpoint(tmp_path, {**s.state("fp"), "world": 3}, step=7)
    with caplog.at_level(logging.INFO, logger="onceflow.train.resume"):
        assert resume(_session(data), tmp_path, "fp", MAIN, CPU)
    assert "elastic restart: step 7 was reached on 3 ranks; going on with 1" in caplog.text
    caplog.clear()
    ckpt.save_checkpoint(tmp_path, {**s.state("fp"), "world": 1}, step=8)
    with caplog.at_level(logging.INFO, logger="onceflow.train.resume"):
        assert resume(_session(data), tmp_path, "fp", MAIN, CPU)
    assert "elastic restart" not in caplog.text


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(data, tmp_path: Path) -> None:
    s = _session(data)
    s.start_phase()
    st = s.state("fp")
    del st["phase"]
    ckpt.save_checkpoint(tmp_path, st, step=1)
    [path] = ckpt.checkpoint_files(tmp_path)
    with pytest.raises(DataError) as err:
        resume(_session(data), tmp_path, "fp", MAIN, CPU)
    assert str(err.value) == (
        f"{path}: carries this run's fingerprint but its contents do not fit it (KeyError: "
        f"'phase'); delete it (or {tmp_path}/) to start fresh"
    )
    bigger = Supernet(tiny_space(head_channels=64)).state_dict()
    ckpt.save_checkpoint(tmp_path, {**s.state("fp"), "model": bigger}, step=2)
    with pytest.raises(DataError, match=r"do not fit it \(RuntimeError: Error\(s\) in loading"):
        resume(_session(data), tmp_path, "fp", MAIN, CPU)
    ckpt.save_checkpoint(tmp_path, {**s.state("fp"), "history": None}, step=3)
    with pytest.raises(DataError, match=r"do not fit it \(TypeError: 'NoneType' object is not"):
        resume(_session(data), tmp_path, "fp", MAIN, CPU)
    ckpt.save_checkpoint(tmp_path, {**s.state("fp"), "phase": 5}, step=4)
    with pytest.raises(DataError, match=r"do not fit it \(IndexError: list index out of range\)"):
        resume(_session(data), tmp_path, "fp", MAIN, CPU)
    ckpt.save_checkpoint(tmp_path, {**s.state("fp"), "seconds": "x"}, step=5)
    with pytest.raises(DataError, match=r"do not fit it \(ValueError: could not convert"):
        resume(_session(data), tmp_path, "fp", MAIN, CPU)


def test_fingerprint_is_the_hash_of_its_documented_parts(data, monkeypatch) -> None:
    """The identity's composition, written out: a renamed or dropped part changes every run's
    identity (and orphans every checkpoint), so it is pinned here key by key."""
    from onceflow.io import sha256_json
    from onceflow.train import resume as resume_mod

    monkeypatch.setattr(resume_mod, "code_digest", lambda: "c0de")
    cfg = tiny_train()
    launch = {"checkpoint_every_steps", "keep_checkpoints", "processes", "nodes",
              "rdzv_endpoint", "max_restarts", "rdzv_timeout_s", "rdzv_last_call_s"}  # fmt: skip
    parts = {
        "space": tiny_space().to_json(),
        "train": cfg.model_dump(mode="json", exclude=launch),
        "seed": 3,
        "data": data.meta.content_sha256 or data_identity(data),
        "n": len(data.train),
        "world": "elastic",
        "device": "cpu",
        "code": "c0de",
    }
    assert isinstance(parts["train"]["phases"][0]["lr"], float)  # JSON mode: plain values
    got = fingerprint(tiny_space(), cfg, 3, data, "elastic", torch.device("cpu"))
    assert got == sha256_json(parts)[:16]
