# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The embedded chest X-ray sample: real data that ships with the package, so a fresh install works offline.

320 Kermany pediatric chest X-rays (CC BY 4.0, see ``sample/ATTRIBUTION.md``) from the official train split,
160 NORMAL and 160 PNEUMONIA, one image per patient, 128x128 8-bit grayscale PNG. ``manifest.csv`` assigns a
patient-disjoint, label-balanced ``split``: train 192 (96/96), val 64 (32/32), test 64 (32/32).
Regenerate with ``scripts/build_embedded_sample.py``.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SAMPLE_SPLITS", "load_sample_arrays", "load_sample_datalist", "sample_dir"]

#: Splits of the embedded sample, in manifest order.
SAMPLE_SPLITS: tuple[str, ...] = ("train", "val", "test")


def sample_dir() -> Path:
    """Absolute path of the embedded sample folder (``manifest.csv``, ``ATTRIBUTION.md``, ``images/``).

    Raises:
        FileNotFoundError: when the package was installed without its data files.
    """
    d = Path(__file__).resolve().parent / "sample"
    if not (d / "manifest.csv").is_file():
        raise FileNotFoundError(
            f"embedded sample not found at '{d}'; the package data (monai_aegis/data/sample) was not installed. "
            "Reinstall monai-aegis, or run scripts/build_embedded_sample.py with the shared data."
        )
    return d


def _check_split(split: str | None) -> None:
    if split is not None and split not in SAMPLE_SPLITS:
        raise ValueError(f"unknown sample split {split!r}; choose from {list(SAMPLE_SPLITS)} or None (all).")


@functools.lru_cache(maxsize=1)
def _manifest() -> tuple[dict[str, str], ...]:
    with open(sample_dir() / "manifest.csv", newline="", encoding="utf-8") as f:
        return tuple(csv.DictReader(f))


def load_sample_datalist(split: str | None = None) -> list[dict[str, Any]]:
    """Datalist of the embedded sample, ready for :func:`monai_aegis.transforms.classification_transforms`.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` for all 320 images.

    Returns:
        ``[{"image": abs path, "label": 0 (NORMAL) | 1 (PNEUMONIA), "class_name", "patient_id", "subtype",
        "split", "source_file"}, ...]`` in manifest order (split, label, file name). A fresh list each call.

    Raises:
        ValueError: an unknown split.
    """
    _check_split(split)
    root = sample_dir()
    return [
        {
            "image": str(root / r["file"]),
            "label": int(r["label_idx"]),
            "class_name": r["label"],
            "patient_id": r["patient_id"],
            "subtype": r["subtype"],
            "split": r["split"],
            "source_file": r["source_file"],
        }
        for r in _manifest()
        if split is None or r["split"] == split
    ]


@functools.lru_cache(maxsize=4)
def _decoded(split: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    items = load_sample_datalist(split)
    pixels = []
    for it in items:
        with Image.open(it["image"]) as im:
            if im.mode != "L":
                raise ValueError(f"embedded sample image '{it['image']}' is {im.mode}, expected 8-bit grayscale 'L'.")
            pixels.append(np.asarray(im))
    # (N, H, W) -> (N, 1, W, H): the axis order MONAI's PILReader (LoadImage) gives the same PNG.
    images = torch.from_numpy(np.stack(pixels)).transpose(1, 2).unsqueeze(1).contiguous()
    labels = torch.tensor([it["label"] for it in items], dtype=torch.long)
    return images, labels


@functools.lru_cache(maxsize=8)
def _resized(split: str | None, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _decoded(split)
    x = images.float()
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="area")
    return (x / 255.0).clamp_(0.0, 1.0), labels


def load_sample_arrays(
    split: str | None = "train", spatial_size: int | tuple[int, int] = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded sample as in-memory tensors, for fast tests and benchmarks.

    Equal (to float rounding) to stacking :func:`classification_transforms(spatial_size)` outputs of
    :func:`load_sample_datalist`: same axis order as ``LoadImage`` (``(W, H)`` of the PNG), area resize,
    intensities ``/ 255``. Decoding and resizing are cached per process; each call returns fresh copies.

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (all).
        spatial_size: output size, an int or ``(H, W)``.

    Returns:
        ``(images, labels)``.

    Shape:
        images: ``(N, 1, H, W)`` float32 in [0, 1]; labels: ``(N,)`` long (0 NORMAL, 1 PNEUMONIA).

    Raises:
        ValueError: an unknown split or a non-positive size.
    """
    _check_split(split)
    size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"spatial_size must be a positive int or (H, W), got {spatial_size!r}.")
    images, labels = _resized(split, size)
    return images.clone(), labels.clone()
