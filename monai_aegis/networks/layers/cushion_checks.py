# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Input checks shared by the Cushion functionals (JPEG, bit depth, TVM) and :class:`~.cushion.CushionLayer`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...utils import check_image_batch

_RANGE_ATOL = 1e-6  # the slack check_image_batch allows around [0, 1]


def _check_input(x: torch.Tensor, name: str = "x", scan_values: bool = True) -> None:
    """Validate a ``(B, C, H, W)`` / ``(B, C, D, H, W)`` float batch in ``[0, 1]``.

    :func:`monai_aegis.utils.check_image_batch` checks finiteness and range in one ``aminmax`` pass. With
    ``scan_values=False`` only the structure is checked here; the caller checks the values itself and calls
    ``check_image_batch`` when they are not in range.
    """
    if not scan_values and isinstance(x, torch.Tensor) and x.ndim in (4, 5) and x.numel() > 0:
        if x.is_floating_point():
            return
    check_image_batch(x, name, spatial_dims=(2, 3), value_range=(0.0, 1.0))


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}.")
    return int(value)


def _check_slice_dim(slice_dim: Any) -> int:
    """Return the tensor dim (2, 3 or 4) of a ``(B, C, *spatial)`` volume along which it is cut into 2-D slices."""
    if isinstance(slice_dim, bool) or not isinstance(slice_dim, (int, np.integer)) or int(slice_dim) not in (
        -3, -2, -1, 2, 3, 4,
    ):
        raise ValueError(f"slice_dim must be a spatial dim of a 5-D batch (2, 3, 4 or -3, -2, -1), got {slice_dim!r}.")
    return int(slice_dim) % 5


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (and cast back), float32/float64 as they are."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32
