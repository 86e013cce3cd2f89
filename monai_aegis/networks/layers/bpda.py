# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""BPDA (Athalye et al., 2018): the true Cushion value forward, the gradient of a proxy backward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import torch
from torch.autograd.function import once_differentiable

__all__ = ["bpda"]

ProxyType = Union[str, Callable[[torch.Tensor], torch.Tensor], None]


class _BPDA(torch.autograd.Function):
    """Value of ``forward_fn``, gradient of ``proxy`` (identity when ``proxy`` is None)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward_fn: Callable, proxy: Callable | None) -> torch.Tensor:
        y = forward_fn(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"bpda: forward_fn must return a tensor of the input shape {tuple(x.shape)}, got {got}.")
        ctx.proxy = proxy
        if proxy is not None:
            ctx.save_for_backward(x)
        if y is x or y.data_ptr() == x.data_ptr():
            y = y.clone()  # an output must not alias the input of a custom autograd function
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if ctx.proxy is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            yp = ctx.proxy(xd)
        if not isinstance(yp, torch.Tensor) or yp.shape != grad.shape:
            got = tuple(yp.shape) if isinstance(yp, torch.Tensor) else type(yp).__name__
            raise ValueError(f"bpda: proxy must return a tensor of shape {tuple(grad.shape)}, got {got}.")
        if not yp.requires_grad:
            return torch.zeros_like(x), None, None
        (gx,) = torch.autograd.grad(yp, xd, grad, allow_unused=True)
        return (torch.zeros_like(x) if gx is None else gx), None, None


def bpda(
    x: torch.Tensor,
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    proxy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Backward Pass Differentiable Approximation (Athalye et al., 2018).

    The value is exactly ``forward_fn(x)`` (computed without autograd); the backward pass returns the
    vector-Jacobian product of ``proxy`` at ``x`` instead, i.e. ``grad_out`` itself for the identity proxy.
    A non-identity proxy is re-evaluated on ``x`` during the backward pass. Second-order gradients are not
    supported.

    Args:
        x: input tensor.
        forward_fn: the (possibly non-differentiable) transform; must return a tensor of the shape of ``x``.
        proxy: differentiable surrogate of ``forward_fn`` with the same output shape, or ``None`` for identity.

    Returns:
        ``forward_fn(x)``, differentiable with respect to ``x`` through ``proxy``.
    """
    return _BPDA.apply(x, forward_fn, proxy)
