"""Packaging fixtures: prepared tiny data, a small trained CNN, a tiny supernet, fast params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from onceflow.config import Params, parse_params
from onceflow.data.prepared import PreparedData, load_prepared
from onceflow.inputs import to_input
from onceflow.package.build import Candidate
from tests.support.workspace import TINY_PARAMS

TINY_SUPERNET = TINY_PARAMS["supernet"]  # the same toy space the real-pipeline tests run


def fast_params(**package: object) -> Params:
    """Params with a short latency protocol and small packaging settings."""
    return parse_params(
        {
            "base": {"threads": 1},
            "supernet": TINY_SUPERNET,
            "latency": {"protocol": {"warmup": 2, "repeats": 5}},
            "package": {"bn_calibration_images": 64, "batch_size": 64, **package},
        }
    )


@pytest.fixture(scope="session")
def data(tiny_prepared: Path) -> PreparedData:
    return load_prepared(tiny_prepared)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """One torch thread for each test here (tests/conftest.py)."""


class SmallCNN(nn.Module):
    """A static, export-friendly CNN standing in for an extracted subnet."""

    def __init__(self, channels: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.Hardswish(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@pytest.fixture(scope="session")
def small_cnn(data: PreparedData) -> nn.Module:
    """SmallCNN trained for a few steps on the tiny train split (well above chance)."""
    torch.manual_seed(0)
    model = SmallCNN()
    x = to_input(np.array(data.train.images), data.meta, 28)
    y = torch.as_tensor(np.array(data.train.labels))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def candidate(resolution: int = 28) -> Candidate:
    return Candidate(
        arch_json={"toy": "small-cnn", "resolution": resolution},
        arch_str="small-cnn",
        resolution=resolution,
        budgets_ms=(2.0,),
        predicted_accuracy=0.5,
        predicted_latency_ms=0.1,
    )
