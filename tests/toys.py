"""Toy models and data shared by the tests: a tiny named convnet, the small CNN of the Shield-training tests,
separable synthetic images, quick trainers."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


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


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int = 32) -> nn.Module:
    """Mini-batch Adam with a fresh shuffle per epoch from torch's global RNG (seed it before building the model):
    the small classifiers the engine and evaluation tests share."""
    opt = torch.optim.Adam(model.parameters(), lr)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


#: image size and hooked layers of :func:`small_cnn` in the Shield-training and handler tests (embedded sample)
SAMPLE_SIZE = 32
SMALL_CNN_LAYERS = ["2", "6", "10"]


def small_cnn() -> nn.Sequential:
    """Three conv blocks -> linear, 1 channel in, 2 classes; layers ``"2"``, ``"6"``, ``"10"`` are the hooked ones."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 2),
    )


def shield_wrapper(clf, cushion="jpeg80", seed=0):
    """An Aegis (Cushion -> ``clf`` -> a small Shield on ``SMALL_CNN_LAYERS``) around a :func:`small_cnn`."""
    from monai_aegis.networks import AegisWrapper, Shield, cushion_from_name

    torch.manual_seed(seed)
    cush = cushion_from_name(cushion) if cushion else None
    shield = Shield.from_classifier(clf, SMALL_CNN_LAYERS, (1, SAMPLE_SIZE, SAMPLE_SIZE), 2, width=16, hidden=32,
                                    preprocess=cush)
    return AegisWrapper(clf, shield, cushion=cush)


def shield_trainer(wrapper, x, y, epochs, attacks="pgd", steps=5, handlers=(), seed=0, scheduler=None):
    """A seeded ``ShieldTrainer`` over ``(x, y)`` with an eps ramp 1/256 -> 16/256 and a PGD adversary."""
    from torch.utils.data import DataLoader, TensorDataset

    from monai_aegis.engines import ShieldAdversary, ShieldTrainer
    from monai_aegis.handlers import EpsilonScheduler

    torch.manual_seed(seed)
    scheduler = scheduler or EpsilonScheduler(1 / 256, 16 / 256, epochs)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    return ShieldTrainer(
        "cpu", epochs, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
        adversary=ShieldAdversary(wrapper, attacks=attacks, steps=steps),
        train_handlers=[scheduler, *handlers],
    )


def load_script(name: str):
    """Import ``scripts/<name>.py`` (not part of the package) as a module."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def trained_tiny(n_test: int = 24):
    """``(model, x, y, x_test, y_test)``: :func:`tiny_net` (3 classes) trained on 240 synthetic 16x16 RGB images,
    seeded, with ``n_test`` fresh test images (clean accuracy ~1)."""
    torch.manual_seed(0)
    x, y = make_data(240, seed=1)
    model = train(tiny_net(), x, y)
    x_test, y_test = make_data(n_test, seed=2)
    return model, x, y, x_test, y_test
