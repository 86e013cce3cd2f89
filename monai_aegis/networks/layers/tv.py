# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Total-variation minimisation: batched Chambolle projection (2-D and 3-D), and its unrolled iterations as the smooth
BPDA proxy."""

from __future__ import annotations

import math

import torch

from ...utils import check_positive
from .cushion_checks import _check_input, _check_int, _compute_dtype

__all__ = ["tv_minimize"]

_DEFAULT_TV_WEIGHT = 0.1
_DEFAULT_TV_EPS = 2.0e-4
_DEFAULT_TV_MAX_ITER = 200


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(sq)`` with the same values, and a finite (zero) gradient where ``sq == 0``."""
    zero = sq == 0
    return torch.where(zero, torch.zeros_like(sq), torch.sqrt(torch.where(zero, torch.ones_like(sq), sq)))


def _forward_diff(u: torch.Tensor, dim: int) -> torch.Tensor:
    """Forward difference along ``dim`` with a zero last slice (Neumann boundary), same shape as ``u``."""
    return torch.cat([torch.diff(u, dim=dim), torch.zeros_like(u.narrow(dim, 0, 1))], dim=dim)


def _chambolle(img: torch.Tensor, weight: float, eps: float, max_iter: int) -> torch.Tensor:
    """Chambolle's projection algorithm on ``(N, *spatial)``, each of the N images independently.

    Follows ``skimage.restoration._denoise._denoise_tv_chambolle_nd`` step by step, including its stopping rule
    ``|E_prev - E| < eps * E_0`` evaluated per image: an image stops at the iteration skimage would stop at, and
    the batch runs until its last image has stopped. Differentiable (autograd through the unrolled iterations).
    """
    n = img.shape[0]
    spatial = img.shape[1:]
    nd = len(spatial)
    sdims = tuple(range(1, nd + 1))
    bshape = (n,) + (1,) * nd
    tau = 1.0 / (2.0 * nd)
    size = float(math.prod(spatial))
    p = img.new_zeros((nd,) + tuple(img.shape))
    d = torch.zeros_like(img)
    out = img
    result = img
    active = torch.ones(n, dtype=torch.bool, device=img.device)
    e_init = e_prev = None
    for i in range(max_iter):
        if i > 0:
            d = -p.sum(0)  # d is the (negative) divergence of p
            for ax in range(nd):
                dim = ax + 1
                length = img.shape[dim]
                if length > 1:
                    d.narrow(dim, 1, length - 1).add_(p[ax].narrow(dim, 0, length - 1))
            out = img + d
        energy = (d * d).sum(sdims)
        g = torch.stack([_forward_diff(out, ax + 1) for ax in range(nd)])
        norm = _safe_norm((g * g).sum(0))
        energy = energy + weight * norm.sum(sdims)
        norm = norm * (tau / weight) + 1.0
        p = (p - tau * g) / norm
        energy = energy / size
        if i == 0:
            e_init = e_prev = energy
            continue
        newly = active & ((e_prev - energy).abs() < eps * e_init)
        if bool(newly.any()):
            result = torch.where(newly.view(bshape), out, result)
            active = active & ~newly
            if not bool(active.any()):
                return result
        e_prev = energy
    return torch.where(active.view(bshape), out, result)


def tv_minimize(
    x: torch.Tensor,
    weight: float = _DEFAULT_TV_WEIGHT,
    eps: float = _DEFAULT_TV_EPS,
    max_iter: int = _DEFAULT_TV_MAX_ITER,
) -> torch.Tensor:
    """Total-variation minimisation (ROF denoising) with Chambolle's projection algorithm, batched.

    Solves :math:`\\min_u \\mathrm{TV}(u) + \\frac{1}{2\\,\\mathrm{weight}} \\|u - x\\|^2` for every image and
    channel independently, 2-D or 3-D (isotropic TV over all spatial axes). Matches
    ``skimage.restoration.denoise_tv_chambolle(image, weight, eps, max_num_iter, channel_axis=...)`` per channel,
    including its stopping rule. Differentiable: autograd runs through the unrolled iterations, which is the
    smooth BPDA surrogate ``CushionLayer(method="tvm", proxy="smooth")`` uses. (Guo et al.'s TVM also drops
    random pixels before the reconstruction; this implementation has no dropout, so it is deterministic.)

    Args:
        x: float tensor in ``[0, 1]``.
        weight: denoising weight (larger is smoother), ``> 0``.
        eps: relative energy change that stops the iterations, ``>= 0`` (0 runs exactly ``max_iter`` iterations).
        max_iter: maximal number of iterations, ``>= 1``.

    Returns:
        the denoised tensor, same shape and dtype as ``x`` (half precision is computed in float32).

    Raises:
        ValueError: for bad input (see :func:`jpeg_compress`) or bad parameters.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`.
        - Output: same as input.
    """
    _check_input(x)
    weight = check_positive(weight, "weight")
    eps = check_positive(eps, "eps", allow_zero=True)
    max_iter = _check_int(max_iter, "max_iter", 1, 1_000_000)
    xc = x.to(_compute_dtype(x.dtype))
    out = _chambolle(xc.reshape(-1, *x.shape[2:]), weight, eps, max_iter)
    return out.reshape(x.shape).to(x.dtype)
