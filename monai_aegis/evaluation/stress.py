# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The stress test of Medical Aegis (the paper's Table 1): how far can an L-inf bounded attacker move the mean
activation of each hooked layer, up and down, with and without the Cushion?

For every layer ``l`` and direction, BIM maximises ``J_up = mean f_l(x)`` or ``J_down = -mean f_l(x)`` (the mean
over channels and positions of the layer's output) under the budget ``eps``. With a Cushion ``C`` the attacker
differentiates through it with BPDA and the features are those of ``f(C(x))``. Layers whose mean barely moves are
"robust trails" an adversarial example cannot hide, the observation behind the Shield.

All ``2 L`` objectives run in one batched attack: the images are replicated once per (layer, direction) and a
:class:`FeatureMean` objective with per-sample layer and sign drives each copy (the attack loop is per-sample, the
classifier in eval mode, so this equals ``2 L`` separate attacks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..attacks import BIM, DEFAULT_EPS_LINF, Objective
from ..networks import hooked_batches, resolve_layer_names

__all__ = ["FeatureMean", "stress_table", "stress_test"]


class FeatureMean(Objective):
    """``J_b = sign_b * mean f_{l_b}(x_b)``: per sample, raise (``sign = +1``) or lower (``-1``) the mean
    activation of one hooked layer.

    Args:
        layer_names: the layers the objective may read (all are hooked).
        layer_index: ``(B,)`` index into ``layer_names`` of the layer each sample acts on.
        sign: ``(B,)`` +1 (increase the mean) or -1 (decrease it), or one float for all.
    """

    def __init__(self, layer_names: Sequence[str], layer_index: torch.Tensor, sign: torch.Tensor | float = 1.0):
        self.layer_names = tuple(layer_names)
        if not self.layer_names:
            raise ValueError("FeatureMean needs at least one layer name.")
        self.layer_index = torch.as_tensor(layer_index, dtype=torch.long).reshape(-1)
        if int(self.layer_index.min()) < 0 or int(self.layer_index.max()) >= len(self.layer_names):
            raise ValueError(f"layer_index must lie in [0, {len(self.layer_names) - 1}].")
        self.sign = torch.as_tensor(sign, dtype=torch.float32)

    def __call__(
        self, logits: torch.Tensor, features: Mapping[str, torch.Tensor], y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        means = torch.stack([features[n].flatten(1).mean(1) for n in self.layer_names], 1)  # (B, L)
        idx = self.layer_index.to(means.device)
        if idx.shape[0] != means.shape[0]:
            raise ValueError(f"FeatureMean was built for {idx.shape[0]} samples, the batch has {means.shape[0]}.")
        return means.gather(1, idx[:, None])[:, 0] * self.sign.to(means)

    def __repr__(self) -> str:
        return f"FeatureMean(layers={list(self.layer_names)})"


@torch.no_grad()
def _layer_means(model: nn.Module, x: torch.Tensor, names: Sequence[str], preprocess: nn.Module | None,
                 batch_size: int) -> torch.Tensor:
    """``(N, L)`` mean activation of each layer for each image (through ``preprocess``)."""
    return torch.cat([torch.stack([feats[n].flatten(1).mean(1) for n in names], 1).cpu()
                      for _, feats in hooked_batches(model, x, names, preprocess, batch_size)])


def stress_test(
    model: nn.Module,
    x: torch.Tensor,
    layer_names: Sequence[str] | str | None = None,
    eps: float = DEFAULT_EPS_LINF,
    steps: int = 20,
    cushions: Mapping[str, nn.Module | None] | None = None,
    batch_size: int = 64,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Raise and lower the mean activation of each hooked layer with BIM and report what the attacker achieved.

    Args:
        model: the classifier (put in eval mode for the attack; its mode is restored).
        x: ``(N, C, *spatial)`` clean images in ``[0, 1]``.
        layer_names: hooked layers (names, a preset key, or ``None`` for the backbone's preset).
        eps: L-inf budget.
        steps: BIM steps (step size ``2.5 eps / steps``).
        cushions: ``{name: cushion or None}`` settings to compare; default ``{"none": None}``. The attacker
            differentiates through a cushion with its BPDA backward.
        batch_size: images per attack batch (each batch holds ``2 L`` copies of ``batch_size / (2 L)`` images).
        progress: optional callable ``(n_done_images) -> None`` called after each batch.

    Returns:
        one record per (cushion, layer, direction): ``{"cushion", "layer", "direction" ("up" | "down"), "clean_mean",
        "adv_mean", "relative_change" ((adv - clean) / |clean|), "n"}``, where the means are over images of the
        layer's mean activation on ``f(C(x))`` and ``f(C(x_adv))``.
    """
    names = resolve_layer_names(model, layer_names)
    cushions = {"none": None} if cushions is None else dict(cushions)
    n_layers = len(names)
    per_batch = max(1, batch_size // (2 * n_layers))
    # copy k of an image attacks layer k // 2, upwards for even k
    layer_of = torch.arange(2 * n_layers) // 2
    sign_of = 1.0 - 2.0 * (torch.arange(2 * n_layers) % 2).float()
    device = next(model.parameters()).device
    records = []
    for cname, cushion in cushions.items():
        clean = _layer_means(model, x.to(device), names, cushion, batch_size)
        adv_means = torch.zeros(x.shape[0], 2 * n_layers)
        for start in range(0, x.shape[0], per_batch):
            xb = x[start : start + per_batch].to(device)
            b = xb.shape[0]
            rep = xb.repeat_interleave(2 * n_layers, 0)
            objective = FeatureMean(names, layer_of.repeat(b), sign_of.repeat(b))
            attack = BIM(model, eps=eps, steps=steps, objective=objective, preprocess=cushion)
            x_adv = attack(rep).x_adv
            means = _layer_means(model, x_adv, names, cushion, batch_size)  # (b * 2L, L)
            own = means.gather(1, layer_of.repeat(b)[:, None])[:, 0]
            adv_means[start : start + b] = own.view(b, 2 * n_layers)
            if progress is not None:
                progress(b)
        for k in range(2 * n_layers):
            layer = int(layer_of[k])
            c = float(clean[:, layer].mean())
            a = float(adv_means[:, k].mean())
            records.append({
                "cushion": cname, "layer": names[layer], "direction": "up" if k % 2 == 0 else "down",
                "clean_mean": c, "adv_mean": a, "relative_change": (a - c) / max(abs(c), 1e-12), "n": int(x.shape[0]),
            })
    return records


def stress_table(records: Sequence[Mapping[str, Any]]) -> OrderedDict[str, OrderedDict[str, dict[str, float]]]:
    """Group :func:`stress_test` records as ``{cushion: {layer: {"clean", "up", "down", "up_rel", "down_rel"}}}``."""
    out: OrderedDict[str, OrderedDict[str, dict[str, float]]] = OrderedDict()
    for r in records:
        row = out.setdefault(r["cushion"], OrderedDict()).setdefault(r["layer"], {"clean": r["clean_mean"]})
        row[r["direction"]] = r["adv_mean"]
        row[f"{r['direction']}_rel"] = r["relative_change"]
    return out
