# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Array transform for the Cushion: a thin MONAI wrapper over :class:`monai_aegis.networks.layers.CushionLayer`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms.transform import Transform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

from ..networks.layers.cushion import CushionLayer, resolve_cushion
from ..utils import check_image_batch

__all__ = ["Cushion"]


class Cushion(Transform):
    """Apply the cushion (JPEG, bit-depth reduction, TVM or a callable) to one channel-first image.

    Thin wrapper over :class:`~monai_aegis.networks.layers.CushionLayer`: the image gets a batch dimension, goes
    through the layer without autograd, and comes back as the input type (numpy in, numpy out; ``MetaTensor``
    metadata is kept). Intensities must already lie in ``[0, 1]``: after ``LoadImage`` (raw 0-255 or HU values)
    use ``ScaleIntensity`` or ``ScaleIntensityRange`` first.

    JPEG codes 3-D volumes ``(C, H, W, D)`` slice by slice along the last axis (MONAI's layout; see the layer's
    ``slice_dim``) and channels other than grayscale/RGB one by one as grayscale images.

    For attack evaluation and adversarial training put a ``CushionLayer`` inside the model instead: a cushion in
    the data pipeline runs before an in-engine attack and is never attacked.

    Args:
        cushion: a preset or method name (see ``CUSHION_PRESETS``; default ``"jpeg80"``), a ``CushionLayer``,
            or a callable ``(B, C, *spatial) -> same shape``.
        kwargs: layer options overriding the preset (``quality``, ``bits``, ``tv_weight``, ...).

    Raises:
        ValueError: for an image that is not ``(C, H, W)`` / ``(C, D, H, W)`` float in ``[0, 1]``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, cushion: str | CushionLayer | Callable = "jpeg80", **kwargs: Any) -> None:
        layer = resolve_cushion(cushion, **kwargs)
        if layer is None:
            raise ValueError("Cushion needs a cushion (a preset name, a CushionLayer or a callable), got None.")
        self.layer = layer

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: channel-first image ``(C, H, W)`` or ``(C, D, H, W)``, float in ``[0, 1]``.
        """
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        x = img_t.as_tensor() if hasattr(img_t, "as_tensor") else img_t
        if x.ndim not in (3, 4):
            raise ValueError(
                f"Cushion expects a channel-first image (C, H, W) or (C, D, H, W), got shape {tuple(x.shape)}; "
                "add a channel dimension first (e.g. monai.transforms.EnsureChannelFirst)."
            )
        check_image_batch(x[None], name="img", spatial_dims=(2, 3), value_range=(0.0, 1.0))
        with torch.no_grad():
            out = self.layer(x[None])[0]
        result, *_ = convert_to_dst_type(out, dst=img, dtype=out.dtype)
        return result
