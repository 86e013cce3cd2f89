# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""A preprocessing that never stops a screening run: a file that cannot be read, has the wrong shape or holds no image
content becomes an entry that says why, and the item still batches with the others."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..utils import error_line

__all__ = ["TolerantTransformD", "TolerantTransformDict", "TolerantTransformd"]

logger = logging.getLogger(__name__)


def _error_message(exc: BaseException) -> str:
    """``"Type: first line"`` of the innermost cause (MONAI wraps transform errors in ``RuntimeError``)."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return error_line(root)


class TolerantTransformd(MapTransform):
    """Apply ``transform`` to a data item; a failure (unreadable file, wrong shape, NaN) becomes an error entry.

    On success the item gets ``error_key = ""``; on failure every ``keys`` entry is replaced by zeros of
    ``image_shape`` and ``error_key`` holds ``"ExceptionType: message"`` (the innermost cause), so that the
    item still batches with the others and is reported instead of stopping the run. ``file_key`` is kept (copied
    from the first key's input path when absent).

    With ``min_std``, a preprocessed image whose intensities barely vary (standard deviation below ``min_std``) is
    marked for rejection: ``reject_key`` holds the reason (``""`` otherwise). Constant images, images of a few
    pixels blown up to the model's size, and pure noise far larger than the model's size (averaged to flat grey by
    the resizing) all look like this; a real radiograph at 64 px has a standard deviation of about 0.2. The
    classifier still runs on them, but :class:`~monai_aegis.bundle.ScreeningWriter` reports them as ``REJECT`` with
    the reason.

    Args:
        keys: the image key(s) produced by ``transform``.
        transform: the preprocessing, e.g. :func:`monai_aegis.transforms.classification_transforms`.
        image_shape: the expected ``(C, H, W)`` output; another shape is an error (``None``: not checked).
        error_key: key of the error message.
        file_key: key of the source path.
        allow_missing_keys: do not raise when a key is missing.
        min_std: reject images with less intensity variation than this (``None``: no check).
        reject_key: key of the rejection reason.

    Example::

        pre = TolerantTransformd("image", classification_transforms(64, 1), image_shape=(1, 64, 64))
        pre({"image": "broken.dcm"})  # {"image": zeros(1, 64, 64), "file": "broken.dcm", "error": "RuntimeError: ..."}
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable[[Any], Any],
        image_shape: Sequence[int] | None = None,
        error_key: str = "error",
        file_key: str = "file",
        allow_missing_keys: bool = False,
        min_std: float | None = None,
        reject_key: str = "reject",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not callable(transform):
            raise ValueError(f"transform must be callable, got {type(transform).__name__}.")
        if min_std is not None and not float(min_std) >= 0:
            raise ValueError(f"min_std must be >= 0, got {min_std}.")
        self.min_std = None if min_std is None else float(min_std)
        self.reject_key = reject_key
        self.transform = transform
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.error_key = error_key
        self.file_key = file_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.file_key not in d:
            first = next(iter(self.key_iterator(d)), None)
            d[self.file_key] = str(d[first]) if isinstance(d.get(first), (str, os.PathLike)) else ""
        try:
            out = dict(self.transform(d))
            reasons = []
            for key in self.key_iterator(out):
                img = torch.as_tensor(out[key])
                if self.image_shape is not None and tuple(img.shape) != self.image_shape:
                    raise ValueError(f"preprocessed image has shape {tuple(img.shape)}, expected {self.image_shape}.")
                if img.is_floating_point() and not bool(torch.isfinite(img).all()):
                    raise ValueError("preprocessed image contains NaN or Inf values.")
                if self.min_std is not None:
                    std = float(img.float().std()) if img.numel() > 1 else 0.0
                    if std < self.min_std:
                        reasons.append(f"no image content: intensity standard deviation {std:.4f} < {self.min_std:g} "
                                       "after preprocessing (constant, a few pixels, or noise averaged to grey)")
            out[self.reject_key] = "; ".join(reasons)
            out[self.error_key] = ""
            out[self.file_key] = d[self.file_key]
            return out
        except Exception as e:  # any reader / transform failure is reported per file
            msg = _error_message(e)
            logger.warning(f"cannot screen '{d[self.file_key]}': {msg}")
            if self.image_shape is None:
                raise ValueError(f"cannot preprocess '{d[self.file_key]}' ({msg}) and no image_shape is set to "
                                 "stand in for it.") from e
            for key in self.key_iterator(d):
                d[key] = torch.zeros(self.image_shape, dtype=torch.float32)
            d[self.error_key] = msg
            d[self.reject_key] = ""
            return d


TolerantTransformD = TolerantTransformDict = TolerantTransformd
