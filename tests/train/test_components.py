"""Data pipeline, losses, schedule, checkpoints: small pure pieces."""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
import pytest
import torch

from onceflow.accuracy import evaluate
from onceflow.data.prepared import load_prepared
from onceflow.inputs import to_input
from onceflow.supernet import Supernet
from onceflow.train.checkpoint import checkpoint_files, load_latest_checkpoint, save_checkpoint
from onceflow.train.data import augment
from onceflow.train.losses import alpha_distill, kl_distill
from onceflow.train.schedule import WarmupCosine, make_scheduler, param_groups
from tests.supernet.helpers import tiny_space


def test_to_input_normalizes_and_resizes(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    x = to_input(data.train.images[:4], data.meta, 28)
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    raw = data.train.images[:4].astype(np.float32) / 255.0
    want = (raw - 0.2) / 0.3
    assert np.allclose(x.numpy(), want.transpose(0, 3, 1, 2), atol=1e-6)
    small = to_input(data.train.images[:4], data.meta, 20)
    assert small.shape == (4, 1, 20, 20)
    assert abs(float(small.mean()) - float(x.mean())) < 0.05  # antialiased: mean preserved


def test_augment_flips_and_crops_deterministically() -> None:
    imgs = torch.arange(2 * 6 * 6, dtype=torch.uint8).view(2, 6, 6, 1)
    same = augment(imgs, torch.Generator().manual_seed(0), hflip=False, crop_padding=0)
    assert torch.equal(same, imgs)
    a = augment(imgs.repeat(8, 1, 1, 1), torch.Generator().manual_seed(1), True, 2)
    b = augment(imgs.repeat(8, 1, 1, 1), torch.Generator().manual_seed(1), True, 2)
    assert torch.equal(a, b) and a.shape == (16, 6, 6, 1)
    assert not torch.equal(a, imgs.repeat(8, 1, 1, 1))
    flipped = augment(imgs, torch.Generator().manual_seed(0), hflip=True, crop_padding=0)
    for i in range(2):
        assert torch.equal(flipped[i], imgs[i]) or torch.equal(flipped[i], imgs[i].flip(1))


def test_distillation_losses() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 10, generator=g)
    assert kl_distill(t, t).abs().item() < 1e-6
    assert abs(alpha_distill(t.clone(), t).item()) < 1e-5
    for loss_fn in (kl_distill, lambda s, te: alpha_distill(s, te, -1.0, 1.0, 5.0)):
        s = torch.zeros(8, 10, requires_grad=True)
        opt = torch.optim.SGD([s], lr=1.0)
        start = kl_distill(s.detach(), t).item()
        for _ in range(50):
            opt.zero_grad()
            loss_fn(s, t).backward()
            opt.step()
        assert kl_distill(s.detach(), t).item() < 0.5 * start
    # teacher gets no gradient
    tt = t.clone().requires_grad_()
    s = torch.zeros(8, 10, requires_grad=True)
    (kl_distill(s, tt) + alpha_distill(s, tt)).backward()
    assert tt.grad is None
    # alpha_min == alpha_max is a fixed-alpha divergence
    assert torch.isfinite(alpha_distill(s, t, 0.5, 0.5))


def test_student_loss_adds_weighted_label_loss_to_distillation() -> None:
    from onceflow.config import TrainConfig
    from onceflow.train.sandwich import distill_loss

    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g), torch.arange(8)
    ce = torch.nn.functional.cross_entropy(s, y, label_smoothing=0.1)
    kl = kl_distill(s, t)
    torch.testing.assert_close(distill_loss(s, t, y, TrainConfig(student_ce=0.0)), kl)
    torch.testing.assert_close(distill_loss(s, t, y, TrainConfig(student_ce=0.5)), kl + 0.5 * ce)
    torch.testing.assert_close(distill_loss(s, t, y, TrainConfig(distill="none")), ce)
    cfg = TrainConfig(distill="none", student_ce=2.0)  # "none" is the label loss, once
    torch.testing.assert_close(distill_loss(s, t, y, cfg), ce)


def test_warmup_cosine_and_scheduler() -> None:
    f = WarmupCosine(warmup=4, total=20)
    vals = [f(i) for i in range(20)]
    assert vals[0] < vals[1] < vals[3] < 1.0 and f(4) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(vals[4:], vals[5:], strict=False))
    assert f(19) < 0.02 and f(25) == pytest.approx(0.0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = make_scheduler(opt, 2, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(0.5) and lrs[0] < lrs[2]


def test_no_weight_decay_on_bn_bias_and_transforms() -> None:
    net = Supernet(tiny_space())
    decay, no_decay = param_groups(net, 1e-4)
    names = {id(p): n for n, p in net.named_parameters()}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "stem.1.weight" in nd and "head.classifier.bias" in nd
    assert any(".transforms." in n for n in nd)
    d = {names[id(p)] for p in decay["params"]}
    assert "stem.0.weight" in d and "head.classifier.weight" in d
    assert not any("bn" in n or n.endswith("bias") for n in d)
    assert len(d) + len(nd) == len(list(net.parameters()))


def test_checkpoint_fallback_on_corrupt_newest(tmp_path, caplog) -> None:
    for step in (3, 6, 9, 12):
        save_checkpoint(tmp_path, {"model": {"w": torch.full((2,), float(step))}}, step, keep=3)
    assert [p.name for p in checkpoint_files(tmp_path)] == [
        "ckpt-00000006.pt", "ckpt-00000009.pt", "ckpt-00000012.pt"
    ]  # fmt: skip
    newest = checkpoint_files(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:40])  # truncated, as after a crash mid-copy
    with caplog.at_level(logging.WARNING):
        state, path = load_latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000009.pt" and float(state["model"]["w"][0]) == 9.0
    assert "ckpt-00000012.pt is unreadable" in caplog.text
    assert load_latest_checkpoint(tmp_path / "none") is None


def test_checkpoint_with_a_flipped_bit_is_reported_and_never_loaded(tmp_path, caplog) -> None:
    for step in (3, 6):
        w = torch.arange(4096, dtype=torch.float32) + step
        save_checkpoint(tmp_path, {"model": {"w": w}, "step": step}, step, keep=3)
    newest = checkpoint_files(tmp_path)[-1]
    blob = bytearray(newest.read_bytes())
    header = blob.index(b"\n") + 1
    payload = bytes(blob[header:])
    at = payload.index(struct.pack("<f", 4006.0))  # w[4000] of step 6, inside the tensor data
    blob[header + at + 1] ^= 0x10  # one bit
    newest.write_bytes(bytes(blob))
    # without the digest this corruption loads silently, with a wrong weight
    flipped = torch.load(io.BytesIO(bytes(blob[header:])), weights_only=True)
    assert not torch.equal(flipped["model"]["w"], torch.arange(4096, dtype=torch.float32) + 6)
    with caplog.at_level(logging.WARNING):
        state, path = load_latest_checkpoint(tmp_path)
    assert path.name == "ckpt-00000003.pt" and state["step"] == 3
    assert f"checkpoint {newest} is unreadable (sha256 mismatch" in caplog.text
    # nothing verifiable left: no checkpoint (training starts over)
    checkpoint_files(tmp_path)[0].write_bytes(payload)  # a payload without its digest header
    with caplog.at_level(logging.WARNING):
        assert load_latest_checkpoint(tmp_path) is None
    assert "no onceflow-checkpoint digest header" in caplog.text


def test_evaluate_accuracy_range(tiny_prepared) -> None:
    data = load_prepared(tiny_prepared)
    net = Supernet(tiny_space())
    acc = evaluate(net, data.val.images, data.val.labels, data.meta, 20, batch_size=25)
    assert acc * len(data.val.labels) == round(acc * len(data.val.labels))  # a count of images
    assert net.training  # mode restored

    class Says(torch.nn.Module):
        """Always class ``k``: its accuracy is the share of images of class k."""

        def __init__(self, k: int) -> None:
            super().__init__()
            self.k, self.w = k, torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()

    labels = np.asarray(data.val.labels)
    assert (labels == 3).sum() == 6 and len(labels) == 60  # tiny_prepared: 6 val images a class
    for batch in (25, 60, 500):  # 3 batches, one, one larger than the split
        assert evaluate(Says(3), data.val.images, labels, data.meta, 20, batch) == 0.1
    assert np.isnan(evaluate(Says(3), data.val.images[:0], labels[:0], data.meta, 20, 25))
