# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Validation of a datalist before training: structure, labels, files, and optionally that every file loads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import error_line
from .files import _as_int

__all__ = ["check_datalist"]

def check_datalist(
    datalist: Sequence[Mapping[str, Any]],
    num_classes: int | None = None,
    try_load: bool = False,
    *,
    image_key: str = "image",
    label_key: str | None = "label",
    reader: Any = None,
    max_reported: int = 5,
) -> Sequence[Mapping[str, Any]]:
    """Validate a datalist before training: structure, labels, files exist, and optionally that every file loads.

    Args:
        datalist: the items.
        num_classes: when given, every label must lie in ``[0, num_classes)``.
        try_load: load every path item with ``monai.transforms.LoadImage`` (slow: reads every file) so that a
            corrupt or unreadable file is found before training rather than mid-epoch.
        image_key: key of the image (a path, or an array for in-memory items such as MedMNIST).
        label_key: key of the label, ``None`` to skip label checks. Multi-label vectors are checked element-wise.
        reader: ``reader`` argument of ``LoadImage`` (``None``: MONAI picks by extension).
        max_reported: how many bad files to name in the error.

    Returns:
        ``datalist`` unchanged, so the call can wrap a reader.

    Raises:
        ValueError: an empty datalist, an item that is not a dict or lacks ``image_key``/``label_key``, a
            non-integer or out-of-range label, or files that cannot be loaded (the first ``max_reported`` named
            with the reason).
        FileNotFoundError: image paths that do not exist (the first ones named).
    """
    if isinstance(datalist, (str, bytes)) or not isinstance(datalist, Sequence):
        raise ValueError(f"datalist must be a list of dicts, got {type(datalist).__name__}.")
    if len(datalist) == 0:
        raise ValueError("datalist is empty.")
    if num_classes is not None and (int(num_classes) != num_classes or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    missing: list[str] = []
    paths: list[str] = []
    for i, item in enumerate(datalist):
        if not isinstance(item, Mapping):
            raise ValueError(f"datalist[{i}] must be a dict, got {type(item).__name__}.")
        if image_key not in item:
            raise ValueError(f"datalist[{i}] has no '{image_key}' key (keys: {sorted(item)}).")
        img = item[image_key]
        where = f"datalist[{i}] ({img})" if isinstance(img, (str, os.PathLike)) else f"datalist[{i}]"
        if label_key is not None:
            if label_key not in item:
                raise ValueError(f"{where} has no '{label_key}' key (keys: {sorted(item)}).")
            for v in np.asarray(item[label_key]).reshape(-1).tolist() or [None]:
                lab = _as_int(v, f"{where}: label")
                if num_classes is not None and not 0 <= lab < num_classes:
                    raise ValueError(
                        f"{where}: label {lab} is outside [0, {num_classes - 1}] (num_classes={num_classes})."
                    )
        if isinstance(img, (str, os.PathLike)):
            if not Path(img).exists():
                missing.append(os.fspath(img))
            else:
                paths.append(os.fspath(img))
    if missing:
        shown = ", ".join(f"'{m}'" for m in missing[:max_reported])
        more = f" (+{len(missing) - max_reported} more)" if len(missing) > max_reported else ""
        raise FileNotFoundError(f"{len(missing)} image file(s) not found: {shown}{more}.")
    if try_load and paths:
        from monai.transforms import LoadImage

        loader = LoadImage(reader=reader, image_only=True, dtype=None)
        bad: list[str] = []
        count = 0
        for p in paths:
            try:
                img = loader(p)
                if img.numel() == 0:
                    raise ValueError("image is empty")
            except Exception as e:  # any reader failure: truncated/corrupt/unsupported
                count += 1
                if len(bad) < max_reported:
                    bad.append(f"'{p}' ({error_line(e)})")
        if bad:
            more = f" (+{count - len(bad)} more)" if count > len(bad) else ""
            raise ValueError(f"{count} image file(s) cannot be loaded: " + "; ".join(bad) + more + ".")
    return datalist
