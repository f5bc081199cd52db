"""Training: loss goes down, BN recalibration helps, resume is exact, phases are data."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from onceflow.accuracy import evaluate, recalibrated_accuracy
from onceflow.data.prepared import load_prepared
from onceflow.inputs import to_input
from onceflow.supernet import Supernet
from onceflow.train.checkpoint import checkpoint_files
from onceflow.train.loop import train_supernet
from onceflow.train.sandwich import sandwich_step, step_archs
from onceflow.train.schedule import make_optimizer
from tests.supernet.helpers import tiny_space
from tests.train.helpers import kill_after, tiny_train


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sandwich_steps_lower_the_loss(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    space = tiny_space()
    cfg = tiny_train()
    torch.manual_seed(0)
    net = Supernet(space)
    opt = make_optimizer(net, 0.05, 0.9, 0.0)
    x = to_input(data.train.images[:80], data.meta, 28)
    y = torch.from_numpy(np.array(data.train.labels[:80]))
    losses = [
        sandwich_step(net, opt, x, y, step_archs(space, cfg.phases[0], 1, 0, g), cfg)[0]
        for g in range(25)
    ]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


def test_step_archs_follow_phase_elastic_dims() -> None:
    space = tiny_space()
    cfg = tiny_train(phases=[{"name": "k", "epochs": 1, "lr": 0.1, "elastic": ["kernel"]}])
    mx = space.max_arch()
    for g in range(10):
        archs = step_archs(space, cfg.phases[0], 3, seed=0, g=g)
        assert archs[0] == mx and 2 <= len(archs) <= 5 and len(set(archs)) == len(archs)
        assert archs[1].kernels[0] == 3 and archs[1].depths == mx.depths
        assert all(a.expands == mx.expands and a.widths == mx.widths for a in archs)
    assert step_archs(space, cfg.phases[0], 3, 0, 4) == step_archs(space, cfg.phases[0], 3, 0, 4)
    frozen = tiny_train(phases=[{"name": "max", "epochs": 1, "lr": 0.1, "elastic": []}])
    assert step_archs(space, frozen.phases[0], 3, 0, 0) == [mx]  # nothing elastic: max once


def test_bn_recalibration_improves_trained_subnet(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    space = tiny_space()
    cfg = tiny_train(
        phases=[{"name": "all", "epochs": 4, "lr": 0.1}], epoch_eval_images=0, distill="none"
    )
    net = train_supernet(data, space, cfg, progress=False).model
    arch = space.min_arch()
    net.set_active(arch)
    before_stats = net.blocks[0].expand_bn.running_mean.clone()
    before = evaluate(net, data.val.images, data.val.labels, data.meta, arch.resolution, 500)
    after = recalibrated_accuracy(net, arch, data, n_calib=240, batch_size=500, seed=0)
    assert torch.equal(net.blocks[0].expand_bn.running_mean, before_stats)  # supernet untouched
    sub = net.extract(arch)
    from onceflow.supernet import recalibrate_bn

    recalibrate_bn(sub, to_input(data.train.images, data.meta, arch.resolution), n=240)
    c = sub[1].expand[1].num_features
    assert not torch.allclose(sub[1].expand[1].running_mean, before_stats[:c])
    assert after > before and after >= 0.5, (before, after)


def test_resume_after_kill_is_exact_even_past_a_corrupt_checkpoint(
    tiny_prepared, tmp_path, caplog
) -> None:
    data = load_prepared(tiny_prepared)
    space = tiny_space()
    cfg = tiny_train()  # 6 steps/epoch, 12 steps, checkpoints every 3 steps
    full = train_supernet(data, space, cfg, checkpoint_dir=tmp_path / "a", progress=False)
    assert full.completed and full.epochs == 2.0 and len(full.history) == 2

    killed = train_supernet(
        data, space, cfg, checkpoint_dir=tmp_path / "b", should_stop=kill_after(8), progress=False
    )
    assert not killed.completed
    (run_dir,) = (tmp_path / "b").iterdir()  # one folder per run identity
    assert run_dir.name == killed_fp(tmp_path / "a")
    names = [p.name for p in checkpoint_files(run_dir)]
    assert names == ["ckpt-00000003.pt", "ckpt-00000006.pt"]  # step 7-8 lost: < every_steps
    newest = checkpoint_files(run_dir)[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # corrupt: resume falls back to step 3
    logs: list[dict] = []
    with caplog.at_level(logging.INFO):
        resumed = train_supernet(
            data, space, cfg, checkpoint_dir=tmp_path / "b", on_epoch=logs.append, progress=False
        )
    assert "unreadable" in caplog.text and "resumed from" in caplog.text
    assert resumed.completed
    assert _state_equal(resumed.model.state_dict(), full.model.state_dict())
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    assert [r["epoch"] for r in logs] == [1, 2]  # history replayed to the logger


def killed_fp(directory) -> str:  # noqa: ANN001 - a Path
    """The identity folder name of the one run checkpointed under ``directory``."""
    (run_dir,) = directory.iterdir()
    return run_dir.name


def test_runs_of_other_params_keep_their_own_checkpoints(tiny_prepared, tmp_path, caplog) -> None:
    """Experiments A, B, A again in one checkpoint folder: B neither resumes nor deletes A's
    checkpoints (it starts fresh in its own folder), and A resumes where it stopped."""
    data = load_prepared(tiny_prepared)
    space = tiny_space()
    train_supernet(
        data, space, tiny_train(), checkpoint_dir=tmp_path, should_stop=kill_after(3),
        progress=False,
    )  # fmt: skip
    out = train_supernet(
        data, space, tiny_train(n_random=0), checkpoint_dir=tmp_path, should_stop=kill_after(3),
        progress=False,
    )  # fmt: skip
    assert out.steps_run == 3 and out.epochs == pytest.approx(0.5, 1e-3)  # fresh, not resumed
    assert sorted(len(checkpoint_files(d)) for d in tmp_path.iterdir()) == [1, 1]
    with caplog.at_level(logging.INFO):
        again = train_supernet(data, space, tiny_train(), checkpoint_dir=tmp_path, progress=False)
    assert "resumed from" in caplog.text and again.steps_run == 12 - 3


def test_stale_checkpoints_never_prune_the_new_runs_own(tiny_prepared, tmp_path, caplog) -> None:
    """Unreadable leftovers (from before digests or identity folders) are cleared on a fresh
    start; kept, they would outrank and prune the new run's checkpoints."""
    for step in (950, 1000, 1050):
        (tmp_path / f"ckpt-{step:08d}.pt").write_bytes(b"an old checkpoint without a digest")
    data = load_prepared(tiny_prepared)
    with caplog.at_level(logging.WARNING):
        train_supernet(
            data, tiny_space(), tiny_train(), checkpoint_dir=tmp_path, should_stop=kill_after(8),
            progress=False,
        )  # fmt: skip
    assert "starting fresh" in caplog.text and not checkpoint_files(tmp_path)
    names = [p.name for p in checkpoint_files(tmp_path / killed_fp(tmp_path))]
    assert names == ["ckpt-00000003.pt", "ckpt-00000006.pt"]


def test_progressive_shrinking_phases_run_in_order(tiny_prepared, caplog) -> None:
    data = load_prepared(tiny_prepared)
    phases = [
        {"name": "kernel", "epochs": 0.5, "lr": 0.05, "elastic": ["kernel"]},
        {"name": "depth", "epochs": 0.5, "lr": 0.03, "elastic": ["kernel", "depth"],
         "reorder_channels": True},
        {"name": "all", "epochs": 1, "lr": 0.02, "warmup_epochs": 0.2},
    ]  # fmt: skip
    cfg = tiny_train(phases=phases, epoch_eval_images=0, distill="alpha")
    with caplog.at_level(logging.INFO):
        out = train_supernet(data, tiny_space(), cfg, progress=False)
    assert [r["phase"] for r in out.history] == ["kernel", "depth", "all"]
    assert out.history[1]["lr"] < 0.03 + 1e-9 and out.epochs == pytest.approx(2.0)
    assert "phase depth: re-ordering channels" in caplog.text
    assert all(np.isfinite(r["train_loss_distill"]) for r in out.history)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_cuda(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    cfg = tiny_train(phases=[{"name": "all", "epochs": 1, "lr": 0.1}])
    out = train_supernet(data, tiny_space(), cfg, device="cuda", progress=False)
    assert next(out.model.parameters()).is_cuda
    assert 0.0 <= out.history[-1]["val_acc_max"] <= 1.0
