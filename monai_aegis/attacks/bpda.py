"""BPDA (Athalye et al., ICML 2018): run a non-differentiable module forward, differentiate a proxy backward."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["BPDAWrapper", "bpda"]


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward_fn: Any, backward_fn: Any) -> torch.Tensor:
        ctx.backward_fn = backward_fn
        if backward_fn is not None:
            ctx.save_for_backward(x)
        with torch.no_grad():
            out = forward_fn(x)
        if out.shape != x.shape:
            raise ValueError(f"BPDA needs a shape-preserving module, got {tuple(x.shape)} -> {tuple(out.shape)}.")
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if ctx.backward_fn is None:  # straight-through: d out / d x := identity
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(ctx.backward_fn(xd), xd, grad_out)
        return g, None, None


def bpda(x: torch.Tensor, forward_fn: Any, backward_fn: Any = None) -> torch.Tensor:
    """``forward_fn(x)`` exactly in the forward pass; in the backward pass the gradient of ``backward_fn``
    (a differentiable approximation) at ``x``, or the identity when ``backward_fn`` is ``None``."""
    return _BPDAFunction.apply(x, forward_fn, backward_fn)


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
