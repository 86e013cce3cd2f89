"""A small classifier trained on the embedded chest X-ray sample, shared by the Shield training tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toys import fit

from monai_aegis.data import load_sample_arrays

SIZE = 32
LAYERS = ["2", "6", "10"]


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 2),
    )


@pytest.fixture(scope="session")
def sample_arrays():
    return {s: load_sample_arrays(s, SIZE) for s in ("train", "val", "test")}


@pytest.fixture(scope="session")
def trained_classifier(sample_arrays):
    torch.manual_seed(0)
    x, y = sample_arrays["train"]
    clf = fit(small_cnn(), x, y, epochs=15, lr=1e-3)
    xt, yt = sample_arrays["test"]
    with torch.no_grad():
        assert (clf(xt).argmax(1) == yt).float().mean() > 0.8
    return clf
