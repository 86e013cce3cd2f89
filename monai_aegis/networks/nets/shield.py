# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The Shield: per-class detectors reading shallow-to-deep features of a frozen classifier."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..hooks import INPUT_LAYER, FeatureHooks, resolve_layer_names

__all__ = ["INPUT_STEMS", "Shield", "feature_shapes"]

#: first layer of the branch that reads the image itself (:data:`~monai_aegis.networks.INPUT_LAYER`):
#: ``"strided"`` -- a 3x3 convolution from the image channels, stride 2 (the branch works at half resolution from its
#: first layer on; about 4.7x cheaper than ``"pointwise"`` at 64 px, as many parameters); ``"pointwise"`` -- a 1x1
#: channel expansion at full resolution, as the feature branches (the Shields saved before the option existed).
INPUT_STEMS = ("strided", "pointwise")


def feature_shapes(
    classifier: nn.Module,
    layer_names: Sequence[str] | str | None,
    input_shape: Sequence[int],
    preprocess: nn.Module | None = None,
) -> OrderedDict[str, tuple[int, ...]]:
    """Dry-run ``classifier`` on a zero batch of ``input_shape = (C, *spatial)`` and return each hooked layer's
    per-sample feature shape ``(C_l, *spatial_l)``. The classifier's mode is restored afterwards."""
    names = resolve_layer_names(classifier, layer_names)
    param = next(iter(classifier.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((1, *input_shape), device=device, dtype=dtype)
    was_training = classifier.training
    classifier.eval()
    try:
        with torch.no_grad():
            if preprocess is not None:
                x = preprocess(x)
            _, feats = FeatureHooks(classifier, names, detach=True).run(x)
    finally:
        classifier.train(was_training)
    return OrderedDict((n, tuple(int(s) for s in f.shape[1:])) for n, f in feats.items())


class _Branch(nn.Module):
    """One layer's branch for all Y class detectors at once (grouped convolutions keep the detectors separate).

    Maps ``(B, C, *spatial)`` to ``(B, Y, 2 * width)`` (global average and max pooling), or ``(B, D)`` vectors
    through a grouped MLP to ``(B, Y, width)``. ``stem``: the first layer, a 1x1 convolution (``"pointwise"``) or a
    3x3 convolution of stride 2 while the map is >= 8 wide (``"strided"``); either maps the ``C`` channels to
    ``width`` channels per head, each head with weights of its own.
    """

    def __init__(self, shape: Sequence[int], num_heads: int, width: int, depth: int,
                 stem: str = "pointwise") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.width = width
        channels = int(shape[0])
        self.spatial_dims = len(shape) - 1
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        if self.spatial_dims == 0:
            self.body = nn.Sequential(nn.Linear(channels, num_heads * width), nn.ReLU())
            self.out_features = width
            return
        if self.spatial_dims not in (1, 2, 3):
            raise ValueError(f"feature maps must have 0-3 spatial dims, got shape {tuple(shape)}.")
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[self.spatial_dims]
        hidden = num_heads * width
        spatial = list(shape[1:])
        if stem == "strided":
            stride = 2 if min(spatial) >= 8 else 1
            layers: list[nn.Module] = [conv(channels, hidden, 3, stride=stride, padding=1), nn.ReLU()]
            spatial = [math.ceil(s / stride) for s in spatial]
        else:
            layers = [conv(channels, hidden, 1), nn.ReLU()]
        for _ in range(depth):
            stride = 2 if min(spatial) >= 8 else 1
            layers += [conv(hidden, hidden, 3, stride=stride, padding=1, groups=num_heads), nn.ReLU()]
            spatial = [math.ceil(s / stride) for s in spatial]
        self.body = nn.Sequential(*layers)
        self.out_features = 2 * width

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        view = (1, -1) + (1,) * (f.ndim - 2)
        h = self.body((f - self.mean.view(view)) / self.std.view(view))
        if self.spatial_dims == 0:
            return h.view(h.shape[0], self.num_heads, self.width)
        h = h.flatten(2)
        pooled = torch.cat([h.mean(-1).view(h.shape[0], self.num_heads, self.width),
                            h.amax(-1).view(h.shape[0], self.num_heads, self.width)], dim=-1)
        return pooled


class Shield(nn.Module):
    """Per-class adversarial detectors ``S_y`` over multi-layer classifier features (Medical Aegis, tier 2).

    For every class ``y`` the Shield holds a *separate* small detector ``S_y`` that reads the hooked features of
    the frozen classifier, shallow to deep, and outputs one "clean" logit (high = looks like a clean image of
    class ``y``). All ``Y`` detectors run in one pass: each per-layer branch (input standardisation, 1x1 channel
    reduction, ``branch_depth`` 3x3 convolutions, global average + max pooling) uses grouped convolutions, and
    the fusion MLP uses per-class weights, so no parameter is shared between classes. At deployment the logit
    of the *predicted* class decides accept/reject (see :class:`monai_aegis.networks.AegisWrapper`).

    Args:
        feature_shapes: ordered mapping ``layer name -> (C, *spatial)`` of the hooked features (see
            :func:`feature_shapes` or :meth:`from_classifier`). 2-D and 3-D maps and ``(D,)`` vectors work.
        num_classes: number of classes ``Y`` (one detector each).
        width: channels per class in each branch.
        branch_depth: 3x3 convolutions per branch (stride 2 while the map is >= 8 wide).
        hidden: hidden units per class in the fusion MLP.
        fusion_depth: hidden layers in the fusion MLP (0 = linear fusion).
        input_depth: 3x3 convolutions of the branch reading :data:`~monai_aegis.networks.INPUT_LAYER` (the image
            itself): a small CNN per class, trained with the Shield's adversarial objective (as in asymmetrical
            adversarial training, Yin et al. 2020), whose robustness does not depend on the classifier's features.
        input_stem: the input branch's first layer, one of :data:`INPUT_STEMS` (``"strided"``: a 3x3 stride-2
            convolution on the image; ``"pointwise"``: a 1x1 expansion at full resolution, 4.7x the cost at 64 px).

    Shape:
        - Input: mapping ``layer -> (B, C, *spatial)`` with the layers and channel counts given at construction.
        - Output: ``(B, Y)`` clean logits, column ``y`` from ``S_y``.
    """

    def __init__(
        self,
        feature_shapes: Mapping[str, Sequence[int]],
        num_classes: int,
        width: int = 32,
        branch_depth: int = 1,
        hidden: int = 64,
        fusion_depth: int = 1,
        input_depth: int = 4,
        input_stem: str = "strided",
    ) -> None:
        super().__init__()
        if not feature_shapes:
            raise ValueError("feature_shapes must describe at least one hooked layer.")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        for name, v in (("width", width), ("hidden", hidden)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1, got {v}.")
        for name, v in (("branch_depth", branch_depth), ("fusion_depth", fusion_depth), ("input_depth", input_depth)):
            if int(v) < 0:
                raise ValueError(f"{name} must be >= 0, got {v}.")
        if input_stem not in INPUT_STEMS:
            raise ValueError(f"input_stem must be one of {INPUT_STEMS}, got {input_stem!r}.")
        self.feature_shapes = OrderedDict((str(k), tuple(int(s) for s in v)) for k, v in feature_shapes.items())
        self.layer_names = tuple(self.feature_shapes)
        self.num_classes = int(num_classes)
        self._config = {"width": int(width), "branch_depth": int(branch_depth), "hidden": int(hidden),
                        "fusion_depth": int(fusion_depth), "input_depth": int(input_depth), "input_stem": input_stem}
        # ModuleDict keys may not contain "."; keep a parallel list in layer order.
        self.branches = nn.ModuleList(
            _Branch(shape, self.num_classes, int(width), int(input_depth), input_stem) if name == INPUT_LAYER
            else _Branch(shape, self.num_classes, int(width), int(branch_depth))
            for name, shape in self.feature_shapes.items()
        )
        fused = sum(b.out_features for b in self.branches)
        dims = [fused] + [int(hidden)] * int(fusion_depth) + [1]
        self.fusion_weights = nn.ParameterList()
        self.fusion_biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            w = torch.empty(self.num_classes, d_in, d_out)
            for y in range(self.num_classes):  # same init as nn.Linear, independently per class
                nn.init.kaiming_uniform_(w[y].T, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(d_in)
            self.fusion_weights.append(nn.Parameter(w))
            self.fusion_biases.append(nn.Parameter(torch.empty(self.num_classes, d_out).uniform_(-bound, bound)))

    @classmethod
    def from_classifier(
        cls,
        classifier: nn.Module,
        layer_names: Sequence[str] | str | None,
        input_shape: Sequence[int],
        num_classes: int,
        preprocess: nn.Module | None = None,
        **kwargs: Any,
    ) -> Shield:
        """Size a Shield for ``classifier`` by a dry run on ``input_shape = (C, *spatial)``."""
        return cls(feature_shapes(classifier, layer_names, input_shape, preprocess), num_classes, **kwargs)

    def get_config(self) -> dict[str, Any]:
        """Plain-Python constructor arguments (for saving beside the weights)."""
        return {
            "feature_shapes": {k: list(v) for k, v in self.feature_shapes.items()},
            "num_classes": self.num_classes,
            **self._config,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Shield:
        cfg = dict(config)
        cfg.setdefault("input_stem", "pointwise")  # saved before the option existed: the original stem
        shapes = OrderedDict((k, tuple(v)) for k, v in cfg.pop("feature_shapes").items())
        return cls(shapes, **cfg)

    @torch.no_grad()
    def fit_input_stats(self, features: Mapping[str, torch.Tensor]) -> Shield:
        """Set each branch's per-channel input standardisation from (clean) features.

        Layers differ in scale by orders of magnitude; standardising with fixed statistics of clean features
        (instead of batch normalisation, whose batch statistics an attacker or a mixed clean/adversarial batch
        would shift) keeps every branch well conditioned while preserving magnitude anomalies.
        """
        self._check(features)
        for name, branch in zip(self.layer_names, self.branches):
            f = features[name].detach().to(branch.mean)
            dims = [0] + list(range(2, f.ndim))
            if f.numel() // f.shape[1] < 2:
                raise ValueError(f"fit_input_stats needs at least 2 values per channel for layer {name!r}.")
            branch.mean.copy_(f.mean(dims))
            branch.std.copy_(f.std(dims).clamp_min(1e-6))
        return self

    def _check(self, features: Mapping[str, torch.Tensor]) -> None:
        for name, shape in self.feature_shapes.items():
            if name not in features:
                raise KeyError(f"Shield expects features of layer {name!r}; got layers {list(features)}.")
            f = features[name]
            if f.ndim != len(shape) + 1 or f.shape[1] != shape[0]:
                raise ValueError(
                    f"feature {name!r} must have shape (B, {', '.join(map(str, shape))}) "
                    f"(channels and rank fixed at construction), got {tuple(f.shape)}."
                )

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self._check(features)
        h = torch.cat([branch(features[n]) for n, branch in zip(self.layer_names, self.branches)], dim=-1)
        last = len(self.fusion_weights) - 1
        for i, (w, b) in enumerate(zip(self.fusion_weights, self.fusion_biases)):
            h = torch.einsum("byi,yio->byo", h, w) + b
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)

    @staticmethod
    def select(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Pick ``logits[b, classes[b]]`` -> ``(B,)``: the clean logit of each sample's (predicted) class."""
        return logits.gather(1, classes.long().view(-1, 1)).squeeze(1)

    @staticmethod
    def score(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Detection score ``(B,)`` in the convention of every detector here (higher = more adversarial): minus the
        clean logit of each sample's (predicted) class. Accept with :func:`monai_aegis.metrics.accept_mask` and the
        negated clean-logit threshold (``AegisWrapper.score_threshold``)."""
        return -Shield.select(logits, classes)
