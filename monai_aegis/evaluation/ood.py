# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Out-of-distribution acceptance: how often a defended classifier accepts inputs that are not images of its task.

A screening Shield exists to reject what is not a clean study. Adversarial examples are one kind of such input;
noise, blank frames, negatives, scrambled images and photographs of another organ are others, and a Shield that has
only been trained against perturbations may accept them as clean (measured on the chest X-ray bundle before it
trained on :class:`~monai_aegis.transforms.RandOutlier` negatives: two thirds of grey-scale fundus photographs and
three quarters of smooth random blobs were accepted). :func:`outlier_acceptance` measures it per kind, beside the
clean acceptance, at the wrapper's calibrated threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..networks.nets.aegis import AegisWrapper
from ..utils.batches import iter_batches

__all__ = ["outlier_acceptance"]


@torch.no_grad()
def outlier_acceptance(
    wrapper: AegisWrapper,
    images: torch.Tensor,
    kinds: Sequence[str] | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, dict[str, Any]]:
    """Share of accepted inputs for clean ``images`` and for out-of-distribution inputs made from them.

    Args:
        wrapper: a calibrated :class:`~monai_aegis.networks.AegisWrapper` with a Shield.
        images: clean images ``(N, C, H, W)`` in ``[0, 1]`` of the wrapper's input shape (e.g. a test split).
        kinds: :class:`~monai_aegis.transforms.RandOutlier` kinds to make from ``images`` (default all); each row is
            the whole of ``images`` turned into that kind, with the same seed.
        extra: further named batches of inputs that are not images of the task (e.g. photographs of another
            organ, resized to the input shape) -- the held-out check for a Shield trained on synthetic outliers.
        seed: seed of the outliers.
        batch_size: images per forward pass.

    Returns:
        ``{name: {"n", "accepted", "predicted"}}`` -- ``accepted`` the accepted share, ``predicted`` the share of each
        class among the predictions -- with ``"clean"`` first.

    Raises:
        ValueError: a wrapper without a Shield or threshold, or inputs of another shape than the wrapper's.
    """
    from ..transforms.outlier import OUTLIER_KINDS, RandOutlier

    if wrapper.shield is None or wrapper.threshold.numel() == 0:
        raise ValueError("outlier_acceptance needs a calibrated AegisWrapper with a Shield.")
    images = torch.as_tensor(images).float()
    sets: dict[str, torch.Tensor] = {"clean": images}
    for kind in OUTLIER_KINDS if kinds is None else kinds:
        sets[kind] = RandOutlier(kinds=[kind]).set_random_state(seed)(images)
    for name, x in (extra or {}).items():
        if name in sets:
            raise ValueError(f"outlier_acceptance: extra set '{name}' clashes with a built-in row.")
        sets[name] = torch.as_tensor(x).float()
    was_training = wrapper.training
    wrapper.eval()
    device = next(wrapper.classifier.parameters()).device
    rows: dict[str, dict[str, Any]] = {}
    try:
        for name, x in sets.items():
            accept, pred = [], []
            for xb in iter_batches(x, batch_size):
                out = wrapper.screen(xb.to(device))
                accept.append(out["accept"].cpu())
                pred.append(out["pred"].cpu())
            a, p = torch.cat(accept), torch.cat(pred)
            k = int(out["logits"].shape[1])
            rows[name] = {"n": int(a.numel()), "accepted": float(a.float().mean()),
                          "predicted": torch.bincount(p, minlength=k).float().div(p.numel()).tolist()}
    finally:
        wrapper.train(was_training)
    return rows
