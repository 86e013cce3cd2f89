# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Input checks shared by every public entry point.

Every check raises a ``ValueError`` (or ``TypeError`` for a wrong Python type) whose message names the
argument and the problem, so that bad input never turns into a silent wrong answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["check_image_batch", "check_labels", "check_positive", "check_value_range"]


def check_image_batch(
    x: torch.Tensor,
    name: str = "x",
    spatial_dims: Sequence[int] = (2, 3),
    value_range: tuple[float, float] | None = (0.0, 1.0),
    channels: int | None = None,
    allow_integer: bool = False,
) -> None:
    """Check that ``x`` is a batched image tensor ``(B, C, *spatial)``.

    Args:
        x: the tensor to check.
        name: argument name used in error messages.
        spatial_dims: accepted numbers of spatial dimensions (2 for ``(B, C, H, W)``, 3 for ``(B, C, D, H, W)``).
        value_range: inclusive ``(low, high)`` the values must lie in, or ``None`` to skip the range check.
        channels: required channel count, or ``None`` for any.
        allow_integer: accept integer dtypes (otherwise only floating point is accepted).

    Raises:
        TypeError: when ``x`` is not a ``torch.Tensor``.
        ValueError: for a wrong rank, an empty batch, an unsupported dtype, NaN/Inf values or values out of range.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    ranks = sorted(2 + int(s) for s in spatial_dims)
    if x.ndim not in ranks:
        layouts = " or ".join("(B, C, " + ", ".join("DHW"[3 - (r - 2):]) + ")" for r in ranks)
        raise ValueError(f"{name} must have shape {layouts} (rank {ranks}), got shape {tuple(x.shape)}.")
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}).")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) in dim 1, got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        if not allow_integer or x.dtype == torch.bool or x.is_complex():
            raise ValueError(f"{name} must be a floating point tensor, got dtype {x.dtype}.")
        if value_range is not None:
            check_value_range(x, value_range, name)
        return
    # one pass: aminmax propagates NaN and shows +-Inf as an extreme, so it checks finiteness and range together
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf values.")
    if value_range is not None:
        _raise_if_out_of_range(lo, hi, value_range, name)


def check_value_range(x: torch.Tensor, value_range: tuple[float, float], name: str = "x", atol: float = 1e-6) -> None:
    """Raise ``ValueError`` if any value of ``x`` lies outside ``value_range`` (inclusive, with ``atol`` slack)."""
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    _raise_if_out_of_range(lo, hi, value_range, name, atol)


def _raise_if_out_of_range(lo: float, hi: float, value_range: tuple[float, float], name: str, atol: float = 1e-6) -> None:
    low, high = float(value_range[0]), float(value_range[1])
    if lo < low - atol or hi > high + atol:
        raise ValueError(
            f"{name} values must lie in [{low:g}, {high:g}], got min {lo:.6g}, max {hi:.6g}. "
            "Scale intensities first (e.g. monai.transforms.ScaleIntensity)."
        )


def check_labels(y: torch.Tensor, batch_size: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Check class labels: a ``(B,)`` integer tensor (``(B, 1)`` is squeezed) with values in ``[0, num_classes)``.

    Returns:
        the labels as a ``(B,)`` ``torch.long`` tensor.
    """
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != batch_size:
        raise ValueError(f"{name} must have shape ({batch_size},) (one class index per sample), got {tuple(y.shape)}.")
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise ValueError(f"{name} must hold integer class indices, got non-integer values.")
    elif y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}.")
    y = y.long()
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} values must lie in [0, {num_classes - 1}], got min {int(y.min())}, max {int(y.max())}.")
    return y


def check_positive(value: float, name: str, allow_zero: bool = False) -> float:
    """Return ``float(value)`` if it is finite and > 0 (>= 0 with ``allow_zero``), else raise ``ValueError``."""
    v = float(value)
    if not (v == v and abs(v) != float("inf")) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return v
