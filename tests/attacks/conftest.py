"""Tiny models, a quickly trained classifier on separable synthetic data, and a stand-in detector."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from monai_aegis.networks import pool_features
from toys import make_data, tiny_net, train, trained_tiny  # noqa: F401  (re-exported for the attack tests)


@pytest.fixture(scope="session")
def trained():
    """``(model, x_test, y_test)``: a 3-class tiny convnet trained on 16x16 RGB synthetic data (clean acc ~1)."""
    model, _, _, x_test, y_test = trained_tiny(24)
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
