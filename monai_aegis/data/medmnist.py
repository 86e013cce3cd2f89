# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""MedMNIST ``.npz`` files as MONAI datalists (the items carry the image arrays)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .files import PathLike
from .kermany import KERMANY_SPLITS

__all__ = ["medmnist_datalist"]

def medmnist_datalist(
    npz_path: PathLike, split: str = "train", *, monai_orientation: bool = True
) -> list[dict[str, Any]]:
    """Datalist of one split of a MedMNIST ``.npz`` file (e.g. ``pneumoniamnist.npz``).

    The file holds ``{train,val,test}_images`` (``(N, H, W)`` gray, ``(N, H, W, 3)`` RGB or ``(N, D, H, W)`` 3-D,
    uint8) and ``{train,val,test}_labels`` (``(N, 1)`` class index, or ``(N, K)`` multi-label).

    Items carry the image itself, not a path: ``{"image": uint8 ndarray (C, H, W) or (1, D, H, W), "label": int
    (or an int64 vector for multi-label files), "index": row in the split, "split"}``. The arrays are read-only
    views of one array loaded once (no per-item copy), values 0-255 unscaled. Use them with MONAI without
    ``LoadImaged``: ``monai.data.Dataset(items, classification_transforms(spatial_size=28, load=False))`` scales
    0..255 to [0, 1] and resizes; or stack ``item["image"]`` yourself and divide by 255.

    Args:
        npz_path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.
        monai_orientation: swap the two in-plane axes so an image is laid out as ``LoadImage`` lays out the same
            picture saved as PNG (MONAI's PIL/ITK readers index ``(W, H)``). Keeps MedMNIST-trained models and
            PNG/DICOM-loaded inputs consistent. ``False`` keeps the stored ``(H, W)`` order.

    Shape:
        ``item["image"]``: ``(1, H, W)`` gray, ``(3, H, W)`` RGB, ``(1, D, H, W)`` 3-D (in-plane axes swapped
        when ``monai_orientation``).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unknown split, missing keys (the available ones are listed), mismatched lengths or an
            unsupported array shape.
    """
    path = Path(npz_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: '{path}'.")
    if split not in KERMANY_SPLITS:
        raise ValueError(f"unknown MedMNIST split {split!r}; choose from {list(KERMANY_SPLITS)}.")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError ...
        raise ValueError(f"cannot read MedMNIST file '{path}': {e}") from e
    with npz:
        ik, lk = f"{split}_images", f"{split}_labels"
        missing = [k for k in (ik, lk) if k not in npz.files]
        if missing:
            raise ValueError(f"MedMNIST file '{path}' has no {missing}; it has {sorted(npz.files)}.")
        images, labels = npz[ik], npz[lk]
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or len(labels) != len(images):
        raise ValueError(
            f"MedMNIST file '{path}': {lk} shape {labels.shape} does not match {ik} shape {images.shape}."
        )
    if images.ndim == 4 and images.shape[-1] == 3:  # (N, H, W, 3) RGB -> (N, 3, H, W)
        images = np.moveaxis(images, -1, 1)
    elif images.ndim in (3, 4):  # (N, H, W) gray or (N, D, H, W) 3-D -> add channel
        images = images[:, None]
    else:
        raise ValueError(f"MedMNIST file '{path}': unsupported {ik} shape {images.shape}.")
    if monai_orientation:
        images = np.swapaxes(images, -1, -2)
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    multi = labels.shape[1] > 1
    return [
        {"image": images[i], "label": labels[i] if multi else int(labels[i, 0]), "index": i, "split": split}
        for i in range(len(images))
    ]
