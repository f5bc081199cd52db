"""Encoding: round trips with the space, skipped blocks, derived MACs/params."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.errors import ConfigError
from onceflow.predictor.encoding import ArchEncoder, layer_macs, layer_params
from onceflow.supernet import SearchSpace


@pytest.mark.parametrize("name", ["tiny_space", "default_space"])
def test_round_trip_and_canonical_form(name: str, request) -> None:
    space: SearchSpace = request.getfixturevalue(name)
    enc = ArchEncoder(space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(40)] + [space.min_arch(), space.max_arch()]
    x = space.encode_batch(archs)
    assert [space.decode(r) for r in x] == archs  # encode/decode round trip
    # Scramble the kernel/expand indices of skipped blocks: same network, same features.
    scrambled = x.copy()
    skipped = ~enc.active(x)
    assert skipped.any()
    shifted = (x[:, enc._gated] + 1) % enc.cards[enc._gated]
    scrambled[:, enc._gated] = np.where(skipped, shifted, x[:, enc._gated])
    assert (scrambled != x).any()
    np.testing.assert_array_equal(enc.canonicalize(scrambled), x)
    np.testing.assert_array_equal(enc.features(scrambled), enc.features(x))


def test_onehot_layout_and_skipped_blocks_are_zero(tiny_space: SearchSpace) -> None:
    enc = ArchEncoder(tiny_space, derived=False)
    arch = tiny_space.min_arch()  # depth 1 everywhere: block 1 of each stage skipped
    f = enc.features(tiny_space.encode_batch([arch]))[0]
    assert f.shape == (int(enc.cards.sum()),)
    for d, name in enumerate(enc.names):
        group = f[enc.offsets[d] : enc.offsets[d] + enc.cards[d]]
        skipped = name in ("kernel.b1", "expand.b1", "kernel.b3", "expand.b3")
        assert group.sum() == (0 if skipped else 1), name
        if not skipped:
            assert group[0] == 1  # min arch: every choice index 0


def test_derived_costs_equal_sums_over_layer_specs(default_space: SearchSpace) -> None:
    enc = ArchEncoder(default_space)
    rng = np.random.default_rng(1)
    archs = [default_space.sample(rng) for _ in range(30)] + [default_space.max_arch()]
    x = default_space.encode_batch(archs)
    macs = [sum(layer_macs(s) for s in default_space.layer_specs(a)) for a in archs]
    params = [sum(layer_params(s) for s in default_space.layer_specs(a)) for a in archs]
    np.testing.assert_allclose(enc.macs(x), macs)
    np.testing.assert_allclose(enc.params(x), params)
    assert enc.features(x).shape == (31, enc.n_onehot + 2)


def test_layout_check_and_bad_shapes(tiny_space: SearchSpace, default_space: SearchSpace) -> None:
    enc = ArchEncoder(tiny_space)
    enc.check_layout(enc.layout())
    with pytest.raises(ConfigError, match="different search space"):
        ArchEncoder(default_space).check_layout(enc.layout())
    with pytest.raises(ConfigError, match=r"encoded archs must be \(N, "):
        enc.features(np.zeros((2, 3), np.int64))
    x = tiny_space.encode_batch([tiny_space.max_arch()] * 2)
    for value in (int(enc.cards[0]), -1):  # past the last choice, or negative
        bad = x.copy()
        bad[1, 0] = value
        with pytest.raises(ConfigError, match=rf"row 1: resolution index {value} is out of range"):
            enc.features(bad)


def test_per_resolution_features_cross_everything_with_the_resolution(
    default_space: SearchSpace,
) -> None:
    base = ArchEncoder(default_space, derived=True)
    enc = ArchEncoder(default_space, derived=True, per_resolution=True)
    rng = np.random.default_rng(2)
    archs = [default_space.sample(rng) for _ in range(50)]
    x = default_space.encode_batch(archs)
    f, g = enc.features(x), base.features(x)
    n_res = len(default_space.resolutions)
    width = base.n_features - n_res
    assert f.shape == (50, base.n_features + n_res * width) and enc.n_features == f.shape[1]
    np.testing.assert_array_equal(f[:, : base.n_features], g)  # the plain features come first
    blocks = f[:, base.n_features :].reshape(50, n_res, width)
    for i in range(50):
        r = int(x[i, 0])
        np.testing.assert_array_equal(blocks[i, r], g[i, n_res:])  # the arch's resolution...
        assert not np.delete(blocks[i], r, axis=0).any()  # ...and zeros for the others
    # The saved layout rebuilds the same encoder; a plain encoder's layout rebuilds a plain one.
    assert ArchEncoder.from_layout(default_space, enc.layout()).n_features == enc.n_features
    assert ArchEncoder.from_layout(default_space, base.layout()).n_features == base.n_features
