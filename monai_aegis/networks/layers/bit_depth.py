# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Bit-depth reduction (feature squeezing, Xu et al. 2018): keep the most significant bits of every 8-bit level."""

from __future__ import annotations

import torch

from .cushion_checks import _check_input, _check_int, _compute_dtype

__all__ = ["reduce_bit_depth"]


def reduce_bit_depth(x: torch.Tensor, bits: int = 5) -> torch.Tensor:
    """Keep the ``bits`` most significant bits of every 8-bit level (drop the ``8 - bits`` least significant).

    ``x`` is quantised to the 8-bit grid, ``v = round(255 x)``, the low bits are cleared,
    ``v' = (v >> (8 - bits)) << (8 - bits)``, and ``v' / 255`` is returned, exactly (the float arithmetic only
    involves integers and powers of two before the final division). ``bits=5`` and ``bits=4`` are the paper's
    "drop 3 / drop 4 bits"; ``bits=8`` is plain 8-bit quantisation.

    Its gradient is zero almost everywhere; use :class:`CushionLayer` or :func:`bpda` to attack through it.

    Args:
        x: float tensor in ``[0, 1]``.
        bits: bits kept, in ``[1, 8]``.

    Returns:
        a tensor like ``x`` on the grid ``k * 2**(8 - bits) / 255``.

    Raises:
        ValueError: for bad input (see :func:`jpeg_compress`) or ``bits`` outside ``[1, 8]``.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`.
        - Output: same as input.
    """
    _check_input(x)
    bits = _check_int(bits, "bits", 1, 8)
    step = float(2 ** (8 - bits))
    xc = x.to(_compute_dtype(x.dtype))
    levels = torch.round(xc * 255).clamp_(0, 255)
    return levels.div_(step).floor_().mul_(step).div_(255).to(x.dtype)
