"""Recipe options against the weight-sharing gap (issue 30): zero-init of the residual blocks'
last BN, AttentiveNAS-style sampling, regularization on the max subnet only; and that each
keys the run's identity (a checkpoint of another option is not resumed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from onceflow.config import PhaseConfig
from onceflow.data.prepared import load_prepared
from onceflow.inputs import resize, to_input
from onceflow.supernet import Supernet
from onceflow.train.attentive import (
    arch_macs,
    attentive_step_archs,
    flops_proxy,
    layer_macs,
    loss_proxy,
    which_of_step,
)
from onceflow.train.loop import train_supernet
from onceflow.train.resume import fingerprint
from onceflow.train.sandwich import distill_loss, sandwich_step, step_archs
from onceflow.train.schedule import make_optimizer
from tests.supernet.helpers import tiny_space
from tests.train.helpers import kill_after, tiny_train

ALL = PhaseConfig(name="all", epochs=1, lr=0.1)


@pytest.mark.parametrize("zero", [True, False])
def test_zero_init_last_bn_sets_residual_gammas(zero: bool) -> None:
    """With the option each residual block's project BN gamma is 0 at init (BigNAS), else 1;
    the other BNs start at 1 either way."""
    torch.manual_seed(0)
    net = Supernet(tiny_space(), zero_init_last_bn=zero)
    residual = [b for b in net.blocks if b.residual]
    assert residual and any(not b.residual for b in net.blocks)
    for b in net.blocks:
        want = 0.0 if zero and b.residual else 1.0
        assert torch.all(b.project_bn.weight == want)
        assert torch.all(b.expand_bn.weight == 1.0) and torch.all(b.dw_bn.weight == 1.0)


def test_the_training_run_builds_its_net_with_the_option(tiny_prepared) -> None:
    """train.zero_init_last_bn reaches the trained net: after 0-lr steps the gammas are as
    initialized (0 with the option, 1 without)."""
    data = load_prepared(tiny_prepared)
    phases = [{"name": "all", "epochs": 0.2, "lr": 1e-12, "warmup_epochs": 0}]
    for zero in (True, False):
        cfg = tiny_train(phases=phases, zero_init_last_bn=zero, weight_decay=0.0, momentum=0.0)
        net = train_supernet(data, tiny_space(), cfg, progress=False).model
        g = torch.cat([b.project_bn.weight for b in net.blocks if b.residual])
        assert torch.allclose(g, torch.full_like(g, 0.0 if zero else 1.0), atol=1e-6)


def test_arch_macs_grow_with_the_subnet() -> None:
    """MACs by hand for the stem, and min < max."""
    space = tiny_space()
    lo, mid, hi = (
        arch_macs(space, a) for a in (space.min_arch(), space.mid_arch(), space.max_arch())
    )
    assert 0 < lo < hi and lo <= mid <= hi  # (2 choices a dimension: mid is max)
    stem = space.stem_spec(28)
    assert layer_macs(stem) == stem.out_res**2 * stem.kernel**2 * stem.in_ch * stem.out_ch


@pytest.mark.parametrize(
    ("pick", "expect"), [("best", [np.argmax]), ("worst", [np.argmin]), ("best_worst", None)]
)
def test_attentive_sampler_picks_by_the_proxy(pick: str, expect) -> None:  # noqa: ANN001
    """Given a proxy, the random slots hold the candidate it scores best (or worst): here the
    proxy is the MACs, checked against the candidates redrawn from the same (seed, step) RNG."""
    space = tiny_space()
    cfg = tiny_train(attentive_pool=6, attentive_pick=pick, n_random=2)
    proxy = flops_proxy(space)
    for g in (0, 1, 2, 3):
        archs = attentive_step_archs(space, ALL, cfg, 7, g, proxy)
        rng = np.random.default_rng([7, 0x5A3D, g])
        assert archs[:2] == [space.max_arch(), space.min_arch()]
        want = [space.max_arch(), space.min_arch()]
        for i in range(2):
            cands = [space.sample(rng) for _ in range(6)]
            scores = [arch_macs(space, a) for a in cands]
            which = which_of_step(cfg, g, i)
            best = cands[int(np.argmax(scores))]
            worst = cands[int(np.argmin(scores))]
            want.append(best if which == "best" else worst)
            if expect is not None:
                assert which == pick
        assert archs == list(dict.fromkeys(want))
    assert [which_of_step(tiny_train(attentive_pick="best_worst"), g, 0) for g in range(4)] == [
        "best", "worst", "best", "worst",
    ]  # fmt: skip


def test_attentive_best_subnets_are_bigger_than_uniform_ones() -> None:
    """Over many steps the best-by-MACs picks average more MACs than plain uniform sampling,
    and the worst-by-MACs picks fewer."""
    space = tiny_space()
    proxy = flops_proxy(space)

    def mean_macs(cfg) -> float:  # noqa: ANN001
        if cfg.attentive_pool:
            archs = [attentive_step_archs(space, ALL, cfg, 0, g, proxy)[-1] for g in range(60)]
        else:
            archs = [step_archs(space, ALL, 1, 0, g)[-1] for g in range(60)]
        return float(np.mean([arch_macs(space, a) for a in archs]))

    uniform = mean_macs(tiny_train())
    assert mean_macs(tiny_train(attentive_pool=4, attentive_pick="worst")) < uniform
    assert mean_macs(tiny_train(attentive_pool=4, attentive_pick="best")) > uniform


def test_loss_proxy_scores_minus_the_label_loss(tiny_prepared) -> None:
    """The loss proxy is minus each candidate's CE on the batch: the same as computing it by
    hand, and the picked "best" has the lowest loss."""
    data = load_prepared(tiny_prepared)
    space = tiny_space()
    torch.manual_seed(0)
    net = Supernet(space).train()
    x = to_input(torch.from_numpy(np.array(data.train.images[:16])), data.meta, 28, "cpu")
    y = torch.from_numpy(np.array(data.train.labels[:16]))
    cands = [space.sample(np.random.default_rng(s)) for s in range(3)]
    scores = loss_proxy(net, x, y)(cands)
    with torch.no_grad():  # by hand, in train mode (batch statistics) as the proxy
        hand = []
        for a in cands:
            net.set_active(a)
            hand.append(-float(torch.nn.functional.cross_entropy(net(resize(x, a.resolution)), y)))
    assert scores == pytest.approx(hand, rel=1e-5)


def test_regularize_max_only_drops_smoothing_and_dropout_for_the_others(tiny_prepared) -> None:
    """With the option the non-max subnets' label loss is plain CE and they run without the
    head's dropout: their loss no longer depends on the dropout RNG; without it it does."""
    logits, y = torch.randn(8, 10), torch.arange(8)
    plain = torch.nn.functional.cross_entropy(logits, y)
    on = tiny_train(distill="none", regularize_max_only=True)
    off = tiny_train(distill="none")
    assert torch.allclose(distill_loss(logits, logits, y, on), plain)
    assert not torch.allclose(distill_loss(logits, logits, y, off), plain)

    data = load_prepared(tiny_prepared)
    space = tiny_space(dropout=0.5)
    x = to_input(torch.from_numpy(np.array(data.train.images[:16])), data.meta, 28, "cpu")
    y = torch.from_numpy(np.array(data.train.labels[:16]))
    archs = [space.max_arch(), space.min_arch()]

    def rest_losses(cfg) -> list[float]:  # noqa: ANN001
        torch.manual_seed(0)
        net = Supernet(space)
        opt = make_optimizer(net, 0.0, 0.0, 0.0)  # lr 0: the weights stay put
        out = []
        for s in (1, 2):
            torch.manual_seed(s)
            out.append(sandwich_step(net, opt, x, y, archs, cfg)[1])
            assert net.head.dropout == 0.5  # restored after the step
        return out

    # distill "none": the min subnet's loss is its own label loss, not tied to the max's pass
    a, b = rest_losses(tiny_train(distill="none", regularize_max_only=True))
    assert a == b
    a, b = rest_losses(tiny_train(distill="none"))
    assert a != b


@pytest.mark.parametrize(
    "option",
    [
        {"zero_init_last_bn": False},
        {"attentive_pool": 4},
        {"attentive_pool": 4, "attentive_pick": "best"},
        {"attentive_pool": 4, "attentive_proxy": "loss"},
        {"regularize_max_only": True},
    ],
)
def test_each_option_keys_the_run_identity(tiny_prepared, tmp_path, caplog, option) -> None:
    """A checkpoint of the default recipe is not resumed by a run with the option (it starts
    fresh in its own folder), and the fingerprints differ."""
    data = load_prepared(tiny_prepared)
    space = tiny_space()
    base = tiny_train(attentive_pool=4) if "attentive_pick" in option else tiny_train()
    assert fingerprint(space, tiny_train(**option), 0, data, 1) != fingerprint(
        space, base, 0, data, 1
    )
    train_supernet(
        data, space, base, checkpoint_dir=tmp_path, should_stop=kill_after(3), progress=False
    )
    with caplog.at_level(logging.INFO):
        out = train_supernet(
            data, space, tiny_train(**option), checkpoint_dir=tmp_path,
            should_stop=kill_after(3), progress=False,
        )  # fmt: skip
    assert "resumed from" not in caplog.text and out.steps_run == 3
    assert len(list(tmp_path.iterdir())) == 2
