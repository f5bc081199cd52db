"""Block cost tables: the vectorized gather equals summing each arch's own layers."""

from __future__ import annotations

import numpy as np
import pytest

from onceflow.supernet import SearchSpace
from onceflow.supernet.specs import LayerSpec
from onceflow.supernet.tables import BlockTables


def cost(spec: LayerSpec) -> float:
    """Distinct per spec, so a wrong index shows (exact in float64)."""
    return float(spec.in_res * 7 + spec.in_ch * 3 + spec.out_ch + spec.mid_ch * 11 + spec.kernel)


@pytest.mark.parametrize("space_name", ["tiny_space", "default_space"])
def test_sums_match_per_arch_layers(space_name: str, request: pytest.FixtureRequest) -> None:
    space: SearchSpace = request.getfixturevalue(space_name)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(200)] + [space.min_arch(), space.max_arch()]
    tables = BlockTables(space, c=cost, twice=lambda s: 2 * cost(s))
    got = tables.sums(space.encode_batch(archs))
    want = np.array([sum(cost(s) for s in space.layer_specs(a)[1:-1]) for a in archs])
    np.testing.assert_array_equal(got["c"], want)
    np.testing.assert_array_equal(got["twice"], 2 * want)
