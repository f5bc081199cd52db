"""Search space: encoding, sampling, validation, layer specs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from onceflow.config import StageConfig, SupernetConfig
from onceflow.errors import ConfigError
from onceflow.supernet import Arch, Dimension, LayerSpec, SearchSpace, build_layer


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(SupernetConfig(), in_channels=1, n_classes=10, image_size=28)


def test_dimensions_names_and_order(space: SearchSpace) -> None:
    dims = space.dimensions()
    assert all(isinstance(d, Dimension) for d in dims)
    names = [d.name for d in dims]
    assert names[0] == "resolution"
    assert "depth.s2" in names and "width.s2" in names
    assert f"kernel.b{space.n_blocks - 1}" in names and "expand.b5" in names
    assert len(names) == len(set(names)) == 1 + 2 * space.n_stages + 2 * space.n_blocks
    for d in dims:
        assert list(d.choices) == sorted(d.choices)


def test_encode_decode_roundtrip_canonical(space: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = space.sample(rng)
        x = space.encode(a)
        assert x.dtype == np.int64 and x.shape == (len(space.dimensions()),)
        assert space.decode(x) == a
        # a random index vector decodes to a canonical arch whose encoding is stable
        idx = np.array([rng.integers(len(d.choices)) for d in space.dimensions()])
        b = space.decode(idx)
        assert np.array_equal(space.encode(space.decode(space.encode(b))), space.encode(b))
    batch = space.encode_batch([space.max_arch(), space.min_arch()])
    assert batch.shape == (2, len(space.dimensions()))
    assert (batch[1] == 0).all()


def test_skipped_blocks_encode_to_zero(space: SearchSpace) -> None:
    a = space.min_arch()
    ks = list(a.kernels)
    ks[1] = 7  # block 1 is skipped at depth 1
    b = Arch(a.resolution, a.depths, tuple(ks), a.expands, a.widths)
    assert np.array_equal(space.encode(b), space.encode(a))
    assert space.layer_specs(b) == space.layer_specs(a)


def test_sampling_reaches_every_choice(space: SearchSpace) -> None:
    rng = np.random.default_rng(1)
    enc = space.encode_batch([space.sample(rng) for _ in range(400)])
    for j, d in enumerate(space.dimensions()):
        if d.name.startswith(("kernel", "expand")):
            continue  # skipped blocks encode to 0; checked on active blocks below
        assert set(enc[:, j]) == set(range(len(d.choices))), d.name
    # every kernel/expand choice is reached at every block position while it is active
    seen: dict[int, set] = {b: set() for b in range(space.n_blocks)}
    for a in (space.sample(rng) for _ in range(600)):
        for b in space.active_blocks(a):
            seen[b].add((a.kernels[b], a.expands[b]))
    full = set(itertools.product(space.kernels, space.expands))
    assert all(v == full for v in seen.values())


def test_sample_restricted_to_elastic_kinds(space: SearchSpace) -> None:
    rng = np.random.default_rng(2)
    mx = space.max_arch()
    for _ in range(20):
        a = space.sample(rng, elastic=["kernel"])
        assert a.depths == mx.depths and a.widths == mx.widths and a.expands == mx.expands
        assert a.resolution == mx.resolution
    m = space.min_arch(elastic=["kernel", "depth"])
    assert m.kernels[0] == 3 and m.depths == (1,) * space.n_stages
    assert m.widths == mx.widths and m.resolution == mx.resolution


def test_size_counts_distinct_subnets() -> None:
    cfg = SupernetConfig(
        resolutions=[8, 12],
        kernels=[3, 5],
        expands=[2, 3],
        depths=[1, 2],
        widths=[0.5, 1.0],
        stages=[StageConfig(channels=8, stride=2), StageConfig(channels=16, stride=2)],
    )
    sp = SearchSpace(cfg, 1, 3)
    distinct = set()
    for idx in itertools.product(*(range(len(d.choices)) for d in sp.dimensions())):
        distinct.add(sp.decode(idx))
    assert sp.size() == len(distinct)


def test_validate_names_dimension_and_choices(space: SearchSpace) -> None:
    a = space.max_arch()
    bad = Arch(a.resolution, a.depths, (9,) + a.kernels[1:], a.expands, a.widths)
    with pytest.raises(ConfigError, match=r"kernel\.b0=9 .*3, 5, 7"):
        space.validate(bad)
    with pytest.raises(ConfigError, match=r"resolution=30"):
        space.validate(Arch(30, a.depths, a.kernels, a.expands, a.widths))
    with pytest.raises(ConfigError, match=r"width\.s1=0\.5 .*0\.75, 1"):
        space.validate(Arch(28, a.depths, a.kernels, a.expands, (1.0, 0.5, 1.0, 1.0)))
    with pytest.raises(ConfigError, match="depths has 2 entries"):
        space.validate(Arch(28, (1, 1), a.kernels, a.expands, a.widths))
    with pytest.raises(ConfigError, match="expand.b0"):
        space.encode(Arch(28, a.depths, a.kernels, (5.0,) + a.expands[1:], a.widths))


def test_arch_json_and_string_roundtrip(space: SearchSpace) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = space.sample(rng)
        assert Arch.from_json(a.to_json()) == a
        assert hash(Arch.from_json(a.to_json())) == hash(a)
        assert Arch.parse(str(a)) == a
    with pytest.raises(ConfigError, match="cannot parse"):
        Arch.parse("r28-dx")
    with pytest.raises(ConfigError, match="resolution"):
        Arch.from_json({"depths": [1]})


def test_space_json_roundtrip(space: SearchSpace) -> None:
    other = SearchSpace.from_json(space.to_json())
    assert other == space and other.size() == space.size()
    assert other.dimensions() == space.dimensions()


def test_resolution_larger_than_image_is_config_error() -> None:
    with pytest.raises(ConfigError, match="resolutions"):
        SearchSpace(SupernetConfig(resolutions=[28, 32]), 1, 10, image_size=28)


def test_width_elastic_changes_channels(space: SearchSpace) -> None:
    for s in range(space.n_stages):
        assert space.stage_channels(s, 0.75) < space.stage_channels(s, 1.0)


def test_layer_specs_chain_and_block_spec_consistency(space: SearchSpace) -> None:
    rng = np.random.default_rng(4)
    uniq = set(space.unique_layer_specs())
    for _ in range(30):
        a = space.sample(rng)
        specs = space.layer_specs(a)
        assert specs[0].kind == "stem" and specs[-1].kind == "head"
        assert len(specs) == 2 + sum(a.depths)
        for prev, nxt in zip(specs, specs[1:], strict=False):
            assert prev.out_ch == nxt.in_ch and prev.out_res == nxt.in_res
        assert set(specs) <= uniq
        assert specs[-1].out_ch == 10
    assert all(isinstance(s, LayerSpec) for s in uniq)
    assert LayerSpec.from_json(specs[1].to_json()) == specs[1]


def test_unique_layer_specs_match_enumeration() -> None:
    cfg = SupernetConfig(
        resolutions=[12, 16],
        kernels=[3, 5],
        expands=[2, 3],
        depths=[1, 2],
        widths=[0.5, 1.0],
        stages=[StageConfig(channels=8, stride=2, se=True), StageConfig(channels=16, stride=2)],
    )
    sp = SearchSpace(cfg, 3, 4)
    enumerated = set()
    for idx in itertools.product(*(range(len(d.choices)) for d in sp.dimensions())):
        enumerated.update(sp.layer_specs(sp.decode(idx)))
    assert set(sp.unique_layer_specs()) == enumerated


def test_build_layer_shapes(space: SearchSpace) -> None:
    for spec in space.layer_specs(space.sample(np.random.default_rng(5))):
        layer = build_layer(spec).eval()
        y = layer(torch.zeros(2, spec.in_ch, spec.in_res, spec.in_res))
        if spec.kind == "head":
            assert y.shape == (2, spec.out_ch)
        else:
            assert y.shape == (2, spec.out_ch, spec.out_res, spec.out_res)
    with pytest.raises(ConfigError, match="kind"):
        build_layer(LayerSpec("pool", 4, 4, 4, 4, 1, 1, False, "relu"))
