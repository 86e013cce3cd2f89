# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""BPDA (Athalye et al., ICML 2018) as an attack preprocessing stage.

The autograd function lives with the Cushion (:func:`monai_aegis.networks.layers.bpda`); this module wraps any
non-differentiable, shape-preserving module with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..networks.layers.cushion import bpda

__all__ = ["BPDAWrapper", "bpda"]


class BPDAWrapper(nn.Module):
    """Wrap a non-differentiable, shape-preserving module (JPEG, bit-depth reduction, ...) for attacks.

    The forward output is exactly ``module(x)``; gradients are those of ``backward_module`` (identity when
    ``None``: the straight-through estimator). Use it as an attack's ``preprocess`` stage.

    Args:
        module: the true (non-differentiable) transform.
        backward_module: a differentiable proxy with the same input/output shapes, or ``None``.
    """

    def __init__(self, module: nn.Module | Any, backward_module: nn.Module | Any = None) -> None:
        super().__init__()
        self.module = module
        self.backward_module = backward_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bpda(x, self.module, self.backward_module)
