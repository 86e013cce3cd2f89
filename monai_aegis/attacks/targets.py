# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Targets of targeted attacks: for each image a class other than its own -- the one rule the Shield's training
negatives (a fresh draw per batch) and the evaluation's attacks (a fixed, seeded draw) share."""

from __future__ import annotations

import torch

__all__ = ["other_class_targets", "sample_other_classes"]


def sample_other_classes(y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each label a different class drawn uniformly from the others (``1 - y`` for two classes).

    Args:
        y: labels ``(N,)``.
        num_classes: number of classes (at least 2).
        generator: CPU generator of the draw (``None``: torch's global RNG).
    """
    if num_classes < 2:
        raise ValueError(f"other-class targets need at least 2 classes, got {num_classes}.")
    offset = torch.randint(1, num_classes, y.shape, generator=generator, device="cpu").to(y.device)
    return (y + offset) % num_classes


def other_class_targets(y: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Deterministic other-class targets: :func:`sample_other_classes` with a generator seeded by ``seed``, so every
    attack of an evaluation aims each image at the same class."""
    return sample_other_classes(y, num_classes, torch.Generator().manual_seed(int(seed)))
