# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Learned detector subnetworks (DNN) of Metzen et al., "On Detecting Adversarial Perturbations", ICLR 2017.

Per hooked layer, a small binary classifier ("detector subnetwork") is trained on clean (label 0) vs
adversarial (label 1) features of that layer; the score is the **sum of the per-layer logits** (log-odds of
"adversarial"). Heads are sized from the feature shapes (:func:`build_detector_head`):

- maps ``(C, *spatial)`` with 1-3 spatial dims: per-channel standardisation, ``conv3 (C -> h) + ReLU``,
  ``conv3 stride 2 (h -> h) + ReLU``, global average pooling, ``linear (h -> 1)``, ``h = clamp(C // 2, 16, 128)``;
- vectors ``(D,)``: standardisation, ``linear (D -> h) + ReLU``, ``linear (h -> 1)``, ``h = clamp(D // 2, 16, 256)``.

The standardisation statistics are measured on the clean training features at ``fit`` and stored as buffers
(no batch-norm, so training and evaluation behave the same). Training: Adam, binary cross-entropy with
``pos_weight = n_clean / n_adv``, shuffled minibatches from a seeded generator; the heads are initialised under
the same seed without touching the global RNG. Metzen et al. train against a fixed or a dynamic adversary;
here the adversarial features are given to ``fit`` (regenerate them and refit for the dynamic variant).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.layers import Conv, Pool
from torch import nn

from ..utils import check_positive
from .base import FeatureDetector, Features

__all__ = ["DNNDetector", "build_detector_head"]


class _Standardize(nn.Module):
    """``(x - mean) / std`` with per-channel statistics broadcast over any spatial dims."""

    def __init__(self, channels: int, spatial_dims: int) -> None:
        super().__init__()
        shape = (1, channels) + (1,) * spatial_dims
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def set_stats(self, x: torch.Tensor) -> None:
        dims = [0] + list(range(2, x.ndim))
        self.mean.copy_(x.mean(dims, keepdim=True))
        self.std.copy_(x.std(dims, keepdim=True).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_detector_head(shape: Sequence[int], hidden: int | None = None) -> nn.Sequential:
    """Binary classifier head for one layer's features of per-sample ``shape`` (``(D,)`` or ``(C, *spatial)``).

    Args:
        shape: per-sample feature shape (without the batch dimension); 1-3 spatial dims for maps.
        hidden: hidden width (default ``clamp(C // 2, 16, 128)`` for maps, ``clamp(D // 2, 16, 256)`` for vectors).

    Returns:
        an ``nn.Sequential`` mapping ``(N, *shape)`` to ``(N, 1)`` logits; element 0 is the standardisation.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        h = int(hidden) if hidden else min(256, max(16, shape[0] // 2))
        return nn.Sequential(_Standardize(shape[0], 0), nn.Linear(shape[0], h), nn.ReLU(), nn.Linear(h, 1))
    sd = len(shape) - 1
    if sd > 3:
        raise ValueError(f"feature maps must have 1-3 spatial dims, got per-sample shape {shape}.")
    c = shape[0]
    h = int(hidden) if hidden else min(128, max(16, c // 2))
    conv = Conv[Conv.CONV, sd]
    return nn.Sequential(
        _Standardize(c, sd),
        conv(c, h, kernel_size=3, padding=1),
        nn.ReLU(),
        conv(h, h, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        Pool[Pool.ADAPTIVEAVG, sd](1),
        nn.Flatten(1),
        nn.Linear(h, 1),
    )


class DNNDetector(FeatureDetector):
    """Per-layer learned detectors (Metzen et al., 2017); see the module docstring.

    Example::

        det = DNNDetector().fit(clean_feats, adversarial=adv_feats)
        scores = det.score(test_feats)                 # (N,), sum of per-layer logits

    Args:
        hidden: hidden width of every head (``None``: sized from each layer's shape).
        epochs: training epochs.
        batch_size: minibatch size (clean and adversarial samples are shuffled together).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: seed of the head initialisation and the shuffling.
        reduction: ``"none"`` (maps, conv heads), ``"mean"`` (pooled vectors, MLP heads) or ``"flatten"``.
    """

    name = "dnn"
    reductions = ("none", "mean", "flatten")

    def __init__(
        self,
        hidden: int | None = None,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        reduction: str = "none",
    ) -> None:
        super().__init__(reduction)
        self.hidden = None if hidden is None else int(check_positive(hidden, "hidden"))
        self.epochs = int(check_positive(epochs, "epochs"))
        self.batch_size = int(check_positive(batch_size, "batch_size"))
        self.lr = check_positive(lr, "lr")
        self.weight_decay = check_positive(weight_decay, "weight_decay", allow_zero=True)
        self.seed = int(seed)
        self.heads = nn.ModuleDict()

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "hidden": self.hidden,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }

    def _build_heads(self) -> None:
        # ModuleDict keys may not contain '.', so heads are stored in layer order under their index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.heads = nn.ModuleDict(
                {str(i): build_detector_head(shape, self.hidden) for i, shape in enumerate(self._layer_shapes.values())}
            )

    def _head(self, i: int, like: torch.Tensor) -> nn.Module:
        head = self.heads[str(i)]
        p = next(head.parameters())
        if p.device != like.device or p.dtype != like.dtype:
            head.to(device=like.device, dtype=like.dtype)
        return head

    def fit(
        self, features: Features, labels: torch.Tensor | None = None, adversarial: Features | None = None
    ) -> DNNDetector:
        """Train one head per layer on clean (0) vs adversarial (1) features.

        Args:
            features: clean training features ``layer -> (N, C, *spatial) or (N, D)``.
            labels: unused (the detector is not class-conditional); checked for length if given.
            adversarial: adversarial features with the same layers and shapes (required).

        Raises:
            ValueError: bad or mismatched features, or no ``adversarial``.
        """
        with self._fit_scope(features) as feats:
            n = self._num_samples(feats)
            if labels is not None:
                self._check_fit_labels(labels, n, None)
            if adversarial is None:
                raise ValueError("DNNDetector.fit needs adversarial features (the positives of the binary classifier).")
            adv = self._prepare(adversarial, "adversarial")
            for layer, f in adv.items():
                if f.shape[1:] != feats[layer].shape[1:]:
                    raise ValueError(
                        f"adversarial[{layer!r}] has per-sample shape {tuple(f.shape[1:])}, clean features have "
                        f"{tuple(feats[layer].shape[1:])}."
                    )
            m = self._num_samples(adv)
            self._build_heads()
            first = next(iter(feats.values()))
            device, dtype = first.device, first.dtype
            data = [torch.cat([feats[k], adv[k].to(device)]) for k in feats]
            target = torch.cat([torch.zeros(n), torch.ones(m)]).to(device=device, dtype=dtype)
            for i, x in enumerate(data):
                head = self._head(i, x)
                head[0].set_stats(x[:n])
            self._train(data, target, n / m)
            self.heads.eval()
            self._tensors = {}  # parameters live in self.heads; see state_dict()
        return self

    def _train(self, data: list[torch.Tensor], target: torch.Tensor, pos_weight: float) -> None:
        params = [p for h in self.heads.values() for p in h.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=target.new_tensor(pos_weight))
        gen = torch.Generator().manual_seed(self.seed)
        total = target.shape[0]
        self.heads.train()
        with torch.enable_grad():
            for _ in range(self.epochs):
                order = torch.randperm(total, generator=gen).to(target.device)
                for start in range(0, total, self.batch_size):
                    idx = order[start : start + self.batch_size]
                    y = target[idx]
                    loss = sum(loss_fn(self.heads[str(i)](x[idx])[:, 0], y) for i, x in enumerate(data))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # type: ignore[union-attr]
                    opt.step()

    def _score_layers(
        self, features: OrderedDict[str, torch.Tensor], pred_labels: torch.Tensor | None
    ) -> OrderedDict[str, torch.Tensor]:
        self.heads.eval()
        return OrderedDict((layer, self._head(i, f)(f)[:, 0]) for i, (layer, f) in enumerate(features.items()))

    def _combine(self, per_layer: Any) -> torch.Tensor:
        return torch.stack(list(per_layer.values())).sum(0)

    # the heads are modules: persist their state dicts through the generic tensor store
    def state_dict(self) -> dict[str, Any]:
        self._check_fitted()
        self._tensors = {layer: dict(self.heads[str(i)].state_dict()) for i, layer in enumerate(self._layer_shapes)}
        try:
            return super().state_dict()
        finally:
            self._tensors = {}

    def load_state_dict(self, state: Any) -> DNNDetector:
        super().load_state_dict(state)
        self._build_heads()
        for i, layer in enumerate(self._layer_shapes):
            self.heads[str(i)].load_state_dict(self._tensors[layer])
        self.heads.eval()
        self._tensors = {}
        return self

    def to(self, device: torch.device | str) -> DNNDetector:
        self.heads.to(device)
        return self
