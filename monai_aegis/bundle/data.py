# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Datalists of the bundles: the embedded chest X-ray sample by default, a full dataset when ``dataset_dir`` is set."""

from __future__ import annotations

import os
from typing import Any

from ..data.datasets import DATASET_LAYOUTS

__all__ = ["BUNDLE_DATASETS", "bundle_datalists"]

#: dataset layouts a bundle reads from ``dataset_dir`` (:data:`monai_aegis.data.DATASET_LAYOUTS`)
BUNDLE_DATASETS = DATASET_LAYOUTS


def bundle_datalists(
    dataset: str = "kermany",
    dataset_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_items: int | None = None,
    holdout_fraction: float = 0.0,
) -> dict[str, list[dict[str, Any]]]:
    """``{"train", "val", ["holdout",] "test"}`` MONAI datalists (``{"image": path, "label": int, "id": path}``) for a bundle.

    * ``dataset_dir`` empty or ``None``: the embedded 320-image Kermany sample shipped with the package (its own
      train / val / test split). Only for ``"kermany"``: no fundus images are embedded (their licence).
    * a dataset folder: :func:`monai_aegis.data.dataset_splits` (the split rule the evaluation uses too): the
      training images partitioned by patient into train / val (and ``holdout`` when ``holdout_fraction > 0``),
      ``test`` the dataset's own test split. With the evaluation's fractions (``val_fraction=0.1``,
      ``holdout_fraction=0.2``, same seed) a bundle trains on exactly the images that
      ``python -m monai_aegis evaluate --data kermany:<folder>`` keeps out of its ``holdout`` split.

    Args:
        dataset: one of :data:`BUNDLE_DATASETS`.
        dataset_dir: dataset folder, or empty for the embedded sample.
        val_fraction: share of the training images used for validation (threshold calibration).
        seed: seed of the patient-grouped split.
        max_items: keep at most this many items per split (a class-balanced prefix; for smoke tests).
        holdout_fraction: share of the training images held out of training and calibration (a ``holdout``
            datalist, for a later evaluation on images prepared like the training data); 0: none.

    Raises:
        ValueError: an unknown dataset, ``"fundus"`` without ``dataset_dir``, or a ``holdout_fraction`` with the
            embedded sample (its split is fixed).
        FileNotFoundError: a missing folder or CSV.
    """
    from monai.utils import look_up_option

    dataset = look_up_option(str(dataset).lower(), BUNDLE_DATASETS)
    if not dataset_dir:
        if float(holdout_fraction) > 0:
            raise ValueError(
                f"holdout_fraction {holdout_fraction} needs dataset_dir: the embedded sample's train / val / test "
                "split is fixed."
            )
        if dataset != "kermany":
            raise ValueError(
                f"no embedded sample for dataset {dataset!r} (the fundus licence does not allow redistribution): "
                "set dataset_dir to an APTOS 2019 / EyePACS folder, e.g. --dataset_dir /data/aptos2019."
            )
        from ..data import load_sample_datalist

        lists = {s: load_sample_datalist(s) for s in ("train", "val", "test")}
    else:
        from ..data import dataset_splits

        lists = dataset_splits(dataset, dataset_dir, val_fraction=val_fraction, holdout_fraction=holdout_fraction,
                               seed=seed)
    # "id": the image's file, what per-image training state (persistent starts) is keyed on after preprocessing
    lists = {k: [{"image": str(it["image"]), "label": int(it["label"]), "id": str(it["image"])} for it in v]
             for k, v in lists.items()}
    if max_items is not None:
        lists = {k: _balanced_prefix(v, int(max_items)) for k, v in lists.items()}
    for k, v in lists.items():
        if not v:
            raise ValueError(f"the {k} split of {dataset!r} in '{dataset_dir or 'embedded sample'}' is empty.")
    return lists


def _balanced_prefix(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` items, alternating between labels in their original order."""
    by_label: dict[int, list[dict[str, Any]]] = {}
    for it in items:
        by_label.setdefault(int(it["label"]), []).append(it)
    out: list[dict[str, Any]] = []
    queues = [list(v) for _, v in sorted(by_label.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out
