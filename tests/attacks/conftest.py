"""Tiny models, a quickly trained classifier on separable synthetic data, and a stand-in detector."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from monai_aegis.networks import pool_features


def tiny_net(in_channels: int = 3, num_classes: int = 3, dims: int = 2, bn: bool = True) -> nn.Sequential:
    """conv -> (bn) -> relu -> conv(stride 2) -> relu -> global pool -> linear, with named layers."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    layers = [("conv1", conv(in_channels, 8, 3, padding=1))]
    if bn:
        layers.append(("bn1", norm(8)))
    layers += [
        ("act1", nn.ReLU()),
        ("conv2", conv(8, 16, 3, stride=2, padding=1)),
        ("act2", nn.ReLU()),
        ("pool", pool),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(16, num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def make_data(n: int, num_classes: int = 3, channels: int = 3, size: int = 16, seed: int = 0):
    """Class k: mid-grey noise plus a brighter horizontal band at rows [k*s, (k+1)*s); separable but close."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = 0.5 + 0.08 * torch.randn(n, channels, size, size, generator=g)
    band = size // num_classes
    for k in range(num_classes):
        x[y == k, :, k * band : (k + 1) * band, :] += 0.12
    return x.clamp(0, 1), y


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150, lr: float = 0.02) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@pytest.fixture(scope="session")
def trained():
    """``(model, x_test, y_test)``: a 3-class tiny convnet trained on 16x16 RGB synthetic data (clean acc ~1)."""
    torch.manual_seed(0)
    x, y = make_data(240, seed=1)
    model = train(tiny_net(), x, y)
    x_test, y_test = make_data(24, seed=2)
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean()
    assert acc > 0.9, f"the test classifier did not train (acc {acc:.2f})"
    return model, x_test, y_test


class DistanceDetector(nn.Module):
    """Stand-in Shield: clean logit of class k = ``scale * (radius_k - ||pooled(f) - mu_k||^2 / D)``, summed
    over layers; its interface is the Shield's (``layer_names``, features dict -> ``(B, num_classes)``)."""

    def __init__(self, means: dict[str, torch.Tensor], radius: torch.Tensor, scale: float = 10.0) -> None:
        super().__init__()
        self.layer_names = tuple(means)
        for i, m in enumerate(means.values()):
            self.register_buffer(f"mu{i}", m)
        self.register_buffer("radius", radius)
        self.scale = scale

    def forward(self, features):
        pooled = pool_features(features)
        d = 0
        for i, name in enumerate(self.layer_names):
            mu = getattr(self, f"mu{i}")
            f = pooled[name]
            d = d + (f[:, None, :] - mu[None]).pow(2).mean(-1)
        return self.scale * (self.radius[None] - d)


@pytest.fixture(scope="session")
def detector(trained):
    """A DistanceDetector fitted on clean training features of the trained model, radius = 90 % quantile."""
    from monai_aegis.networks import FeatureHooks

    model, _, _ = trained
    x, y = make_data(240, seed=1)
    with torch.no_grad():
        _, feats = FeatureHooks(model, ["act1", "act2"]).run(x)
    pooled = pool_features(feats)
    means = {n: torch.stack([f[y == k].mean(0) for k in range(3)]) for n, f in pooled.items()}
    det = DistanceDetector(means, torch.zeros(3))
    with torch.no_grad():
        d = -det(feats) / det.scale  # squared distances
    radius = torch.stack([d[y == k, k].quantile(0.9) for k in range(3)])
    det.radius.copy_(radius)
    return det
