"""Supernet: extraction exactness, static layers only, reordering, BN, save/load, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from onceflow.config import SupernetConfig
from onceflow.errors import DataError
from onceflow.supernet import (
    SearchSpace,
    Supernet,
    build_layer,
    load_supernet,
    recalibrate_bn,
    save_supernet,
)
from onceflow.supernet.elastic import DynamicBatchNorm2d
from onceflow.supernet.layers import ConvBNAct, Head, MBConv, SqueezeExcite
from tests.supernet.helpers import perturb, tiny_space


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One torch thread for each test here (tests/conftest.py)."""


STATIC_TYPES = (
    nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Identity, ConvBNAct, MBConv, Head, SqueezeExcite,
)  # fmt: skip


@pytest.fixture(scope="module")
def default_net() -> Supernet:
    space = SearchSpace(SupernetConfig(), in_channels=1, n_classes=10, image_size=28)
    torch.manual_seed(0)
    return perturb(Supernet(space)).eval()


def _archs(space: SearchSpace, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [space.max_arch(), space.min_arch(), space.mid_arch()] + [
        space.sample(rng) for _ in range(n)
    ]


def test_extract_matches_supernet_in_eval(default_net: Supernet) -> None:
    space = default_net.space
    g = torch.Generator().manual_seed(1)
    for arch in _archs(space, 20, seed=0):
        x = torch.randn(3, 1, arch.resolution, arch.resolution, generator=g)
        default_net.set_active(arch)
        with torch.no_grad():
            want = default_net(x)
            sub = default_net.extract(arch)
            got = sub(x)
        assert not sub.training
        assert (want - got).abs().max().item() <= 1e-5, str(arch)
        assert all(isinstance(m, STATIC_TYPES) for m in sub.modules()), str(arch)
        assert len(sub) == len(space.layer_specs(arch))


def test_extract_layers_are_build_layer_of_specs(default_net: Supernet) -> None:
    arch = default_net.space.sample(np.random.default_rng(5))
    sub = default_net.extract(arch)
    for layer, spec in zip(sub, default_net.space.layer_specs(arch), strict=True):
        fresh = build_layer(spec)
        assert type(layer) is type(fresh)
        shapes = {k: v.shape for k, v in layer.state_dict().items()}
        assert shapes == {k: v.shape for k, v in fresh.state_dict().items()}


def test_extract_is_independent_copy(default_net: Supernet) -> None:
    arch = default_net.space.min_arch()
    sub = default_net.extract(arch)
    before = default_net.stem[0].weight.clone()
    with torch.no_grad():
        sub[0][0].weight.add_(1.0)
    assert torch.equal(default_net.stem[0].weight, before)


def test_kernel_transform_changes_smaller_kernels_only() -> None:
    space = tiny_space()
    net = Supernet(space).eval()
    arch = space.min_arch()  # kernel 3 everywhere
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    net.set_active(arch)
    y0 = net(x)
    mx = space.max_arch()
    xm = torch.randn(2, 1, mx.resolution, mx.resolution)
    net.set_active(mx)
    ym0 = net(xm)
    with torch.no_grad():
        for blk in net.blocks:
            blk.depthwise.transforms["3"].mul_(0.5)
    net.set_active(arch)
    assert not torch.allclose(net(x), y0)
    net.set_active(mx)
    assert torch.allclose(net(xm), ym0)


def test_reorder_channels_keeps_max_subnet_and_sorts(default_net: Supernet) -> None:
    net = Supernet(default_net.space)
    net.load_state_dict(default_net.state_dict())
    net.eval()
    arch = net.space.max_arch()
    x = torch.randn(2, 1, 28, 28)
    net.set_active(arch)
    with torch.no_grad():
        before = net(x)
        net.reorder_channels()
        after = net(x)
    assert (before - after).abs().max().item() < 1e-4
    imp = net.blocks[4].project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(imp[:-1] >= imp[1:])
    # a smaller subnet changes: it now uses the most important channels
    small = net.space.min_arch()
    net.set_active(small)
    default_net.set_active(small)
    xs = torch.randn(2, 1, small.resolution, small.resolution)
    with torch.no_grad():
        assert not torch.allclose(net(xs), default_net(xs))


def test_dynamic_bn_updates_only_active_slice() -> None:
    bn = DynamicBatchNorm2d(8).train()
    bn(torch.randn(16, 5, 4, 4) * 3 + 2)
    assert torch.all(bn.running_mean[:5] != 0) and torch.all(bn.running_mean[5:] == 0)
    assert torch.all(bn.running_var[5:] == 1)


def test_recalibrate_bn_changes_active_stats() -> None:
    space = tiny_space()
    net = Supernet(space).eval()
    arch = space.min_arch()
    net.set_active(arch)
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    images = torch.randn(64, 1, arch.resolution, arch.resolution) * 2 + 1
    recalibrate_bn(net, images, n=48, batch_size=16)
    after = {k: v for k, v in net.state_dict().items() if "running" in k}
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and "stem.1.running_mean" in changed
    assert not net.training  # mode restored
    # exact average over the 48 images used: the stem BN mean equals the conv output mean
    with torch.no_grad():
        conv = net.stem[0](images[:48])
    assert torch.allclose(net.stem[1].running_mean, conv.mean((0, 2, 3)), atol=1e-5)
    # on an extracted module too, and momentum is restored
    sub = net.extract(arch)
    recalibrate_bn(sub, images, n=32)
    assert sub[0][1].momentum == 0.1
    with pytest.raises(DataError):
        recalibrate_bn(sub, images[:0], n=10)


def test_save_load_roundtrip(tmp_path, default_net: Supernet) -> None:
    save_supernet(default_net, tmp_path / "sn")
    loaded = load_supernet(tmp_path / "sn")
    assert loaded.space == default_net.space and not loaded.training
    arch = default_net.space.sample(np.random.default_rng(9))
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    loaded.set_active(arch)
    default_net.set_active(arch)
    with torch.no_grad():
        assert torch.equal(loaded(x), default_net(x))
    with pytest.raises(DataError, match="dvc repro train_supernet"):
        load_supernet(tmp_path / "missing")
    (tmp_path / "sn" / "space.json").write_text(
        (tmp_path / "sn" / "space.json")
        .read_text()
        .replace('"head_channels": 192', '"head_channels": 64')
    )
    with pytest.raises(DataError, match="does not match"):
        load_supernet(tmp_path / "sn")


def test_extracted_subnet_exports_to_onnx(tmp_path) -> None:
    import onnxruntime as ort  # a hard dependency: a broken install fails, never skips

    space = tiny_space()
    net = perturb(Supernet(space)).eval()
    arch = space.sample(np.random.default_rng(3))
    sub = net.extract(arch).eval()
    x = torch.randn(2, 1, arch.resolution, arch.resolution)
    path = tmp_path / "m.onnx"
    torch.onnx.export(sub, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        assert np.abs(y - sub(x).numpy()).max() < 1e-4
