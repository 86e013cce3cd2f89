# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Evaluation splits as in-memory tensors: patient-grouped train / validation / hold-out parts of a training set,
plus its official test split.

The Kermany chest X-ray test split was prepared differently from its train split (see ``shared/data/README.md``:
squashed 224 px JPEG copies), so an evaluation reports both the official ``test`` split and a patient-disjoint
``holdout`` drawn from the training images (prepared like the training data).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..utils import atomic_torch_save, safe_torch_load, stack_batches

__all__ = ["DATASETS", "load_evaluation_splits", "stack_datalist", "stack_loader"]

#: dataset names understood by :func:`load_evaluation_splits`
DATASETS: tuple[str, ...] = ("kermany", "fundus", "sample")

Split = tuple[torch.Tensor, torch.Tensor]


def stack_datalist(
    items: Sequence[Mapping[str, Any]], spatial_size: int, channels: int, batch_size: int = 64
) -> Split:
    """Load and preprocess every item (``classification_transforms``) and stack them: ``(N, C, H, W)``, ``(N,)``."""
    from monai.data import DataLoader, Dataset

    from ..transforms.preprocessing import classification_transforms

    if not items:
        raise ValueError("no items to load.")
    ds = Dataset([{"image": it["image"], "label": int(it["label"])} for it in items],
                 classification_transforms(spatial_size, channels))
    return stack_loader(DataLoader(ds, batch_size=batch_size, num_workers=0))


#: :func:`monai_aegis.utils.stack_batches` under the name the bundles have used (``stack_loader(loader, max_items)``)
stack_loader = stack_batches


def load_evaluation_splits(
    dataset: str,
    root: str | os.PathLike | None = None,
    spatial_size: int = 64,
    val_fraction: float = 0.1,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Split]:
    """Splits of a dataset as tensors in ``[0, 1]``.

    * ``"kermany"`` / ``"fundus"``: the datalists of :func:`monai_aegis.data.dataset_splits` (the split rule the
      bundles use too: the training images partitioned by patient, stratified by label, into ``train`` / ``val`` /
      ``holdout``; ``test`` the dataset's own test split), loaded with one channel (chest X-ray) or three (fundus).
    * ``"sample"``: the embedded 320-image Kermany sample (``train``/``val``/``test``; no ``holdout``).

    Args:
        dataset: one of :data:`DATASETS`.
        root: dataset folder (not used for ``"sample"``).
        spatial_size: square image size.
        val_fraction: share of the training images for validation (calibration of thresholds).
        holdout_fraction: share of the training images held out for evaluation (0: none).
        seed: seed of the patient-grouped partition.
        cache_dir: when given, the tensors are cached there (keyed by all arguments) and reused.

    Returns:
        ``{split: (images (N, C, H, W) float32, labels (N,) long)}``.
    """
    from monai.utils import look_up_option

    dataset = look_up_option(dataset, DATASETS)
    if dataset == "sample":
        from ..data import load_sample_arrays

        return {s: load_sample_arrays(s, spatial_size) for s in ("train", "val", "test")}
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs its root folder.")
    root = Path(root)
    key = json.dumps([dataset, str(root.resolve()), spatial_size, val_fraction, holdout_fraction, seed])
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{dataset}_{spatial_size}px_{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
        if cache.is_file():
            return {k: (v[0], v[1]) for k, v in safe_torch_load(cache).items()}
    from ..data import dataset_splits

    items = dataset_splits(dataset, root, val_fraction=val_fraction, holdout_fraction=holdout_fraction, seed=seed)
    channels = 1 if dataset == "kermany" else 3
    out = {name: stack_datalist(its, spatial_size, channels) for name, its in items.items()}
    if cache is not None:
        atomic_torch_save({k: [v[0], v[1]] for k, v in out.items()}, cache)
    return out
