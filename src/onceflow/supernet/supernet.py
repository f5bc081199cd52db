"""The weight-sharing supernet: one network holding every subnet of a :class:`SearchSpace`.

``set_active(arch)`` picks the subnet that ``forward`` runs; ``extract(arch)`` returns it as a
plain ``nn.Sequential`` of the static layers ``space.layer_specs(arch)`` with copied weights.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from onceflow.artifacts import field_error, supernet_space
from onceflow.errors import ConfigError, DataError
from onceflow.supernet.arch import Arch
from onceflow.supernet.elastic import (
    DynamicHead,
    DynamicMBConv,
    _permute,
    _permute_bn,
    copy_stem,
)
from onceflow.supernet.layers import build_layer
from onceflow.supernet.space import SearchSpace

log = logging.getLogger(__name__)

WEIGHTS_FILE = "supernet.pt"
SPACE_FILE = "space.json"


class Supernet(nn.Module):
    """Elastic MobileNetV3-style network over ``space``; input is (N, C, r, r) normalized."""

    def __init__(self, space: SearchSpace, zero_init_last_bn: bool = True) -> None:
        super().__init__()
        self.space = space
        r = max(space.resolutions)
        self.stem = build_layer(space.stem_spec(r))
        kmax, emax, wmax = space.kernels[-1], space.expands[-1], space.widths[-1]
        self.blocks = nn.ModuleList(
            DynamicMBConv(space.block_spec(b, r, wmax, wmax, kmax, emax), space.kernels)
            for b in range(space.n_blocks)
        )
        self.head = DynamicHead(space.head_spec(r, wmax), space.config.dropout)
        self._init_weights(zero_init_last_bn)
        self.set_active(space.max_arch())

    def _init_weights(self, zero_init_last_bn: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        # Residual blocks start as identity: stabler when many depths share weights (BigNAS;
        # params train.zero_init_last_bn).
        if not zero_init_last_bn:
            return
        for blk in self.blocks:
            if blk.residual:
                nn.init.zeros_(blk.project_bn.weight)

    # ------------------------------------------------------------------ arch selection
    def sample(self, rng: np.random.Generator) -> Arch:
        return self.space.sample(rng)

    def max_arch(self) -> Arch:
        return self.space.max_arch()

    def min_arch(self) -> Arch:
        return self.space.min_arch()

    def set_active(self, arch: Arch) -> None:
        """Select the subnet ``forward`` runs (validated against the space)."""
        specs = self.space.layer_specs(arch)  # validates
        self.active_arch = arch
        self._active = list(zip(self.space.active_blocks(arch), specs[1:-1], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b, spec in self._active:
            x = self.blocks[b](x, spec)
        return self.head(x)

    # ------------------------------------------------------------------ extraction
    def extract(self, arch: Arch) -> nn.Sequential:
        """The subnet as standard layers (stem, blocks, head) with copied weights, in the
        supernet's train/eval mode and on its device."""
        specs = self.space.layer_specs(arch)
        layers: list[nn.Module] = [copy_stem(self.stem, specs[0])]
        for b, spec in zip(self.space.active_blocks(arch), specs[1:-1], strict=True):
            layers.append(self.blocks[b].to_static(spec))
        layers.append(self.head.to_static(specs[-1]))
        device = next(self.parameters()).device
        return nn.Sequential(*layers).to(device).train(self.training)

    # ------------------------------------------------------------------ channel importance
    @torch.no_grad()
    def reorder_channels(self) -> None:
        """Sort every block's expanded channels and every stage's output channels by importance
        (most important first) so that the slices smaller subnets use keep the best channels.
        The function computed by the max subnet is unchanged."""
        for blk in self.blocks:
            blk.reorder_mid()
        for st in self.space.stages:
            blocks = [self.blocks[b] for b in range(st.first_block, st.first_block + st.max_depth)]
            # importance of an output channel: L1 of every weight that writes it
            imp = sum(blk.project_conv.weight.abs().sum(dim=(1, 2, 3)) for blk in blocks)
            order = torch.sort(imp, descending=True, stable=True).indices
            for i, blk in enumerate(blocks):
                _permute(blk.project_conv.weight, order, 0)
                _permute_bn(blk.project_bn, order)
                if i > 0:  # residual blocks read the stage's channels
                    _permute(blk.expand_conv.weight, order, 1)
            nxt = st.first_block + st.max_depth
            if nxt < self.space.n_blocks:
                _permute(self.blocks[nxt].expand_conv.weight, order, 1)
            else:
                _permute(self.head.conv.weight, order, 1)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, images: torch.Tensor, n: int, batch_size: int = 256
) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them (exact average over
    batches) from the first ``n`` of ``images`` (N, C, H, W normalized, at the resolution the
    model will run). Works on a Supernet (its active arch) and on an extracted module."""
    if n < 1 or len(images) == 0:
        raise DataError(f"recalibrate_bn needs at least one image (n={n}, got {len(images)})")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    x = images[: min(n, len(images))]
    try:
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device))
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return model


def save_supernet(model: Supernet, directory: str | os.PathLike[str]) -> None:
    """Write ``supernet.pt`` (state_dict) and ``space.json`` into ``directory`` (caller makes
    it atomic, e.g. with ``onceflow.io.atomic_dir``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, d / WEIGHTS_FILE)
    (d / SPACE_FILE).write_text(json.dumps(model.space.to_json(), indent=2) + "\n")


def load_space(directory: str | os.PathLike[str]) -> SearchSpace:
    """The search space of ``models/supernet/`` (its ``space.json``), checked: a missing or
    corrupt file is one line naming it and ``train_supernet``."""
    path = Path(directory) / SPACE_FILE
    raw = supernet_space(path)
    try:
        return SearchSpace.from_json(raw)
    except ConfigError as err:
        raise DataError(f"{path}: {err}") from None
    except (KeyError, TypeError, AttributeError, ValueError, ValidationError) as err:
        raise field_error(path, err, "train_supernet") from None


def load_supernet(directory: str | os.PathLike[str], device: str = "cpu") -> Supernet:
    """Read ``models/supernet/`` (``space.json`` + ``supernet.pt`` with weights_only=True).
    A missing, corrupt or foreign file is a DataError naming it."""
    d = Path(directory)
    rerun = "rerun `dvc repro train_supernet`"
    for name in (SPACE_FILE, WEIGHTS_FILE):
        if not (d / name).exists():
            raise DataError(f"{d}: missing {name} — not a trained supernet ({rerun})")
    space = load_space(d)  # checked: one line naming space.json and train_supernet
    try:
        state = torch.load(d / WEIGHTS_FILE, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{d / WEIGHTS_FILE}: unreadable weights ({first}); {rerun}") from None
    if not isinstance(state, dict):
        raise DataError(f"{d / WEIGHTS_FILE}: not a state dict; {rerun}")
    model = Supernet(space)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise DataError(
            f"{d / WEIGHTS_FILE} does not match {d / SPACE_FILE}: {str(err).splitlines()[0]}"
        ) from None
    return model.to(device).eval()
