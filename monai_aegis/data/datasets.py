# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""A dataset folder -> its train / validation (/ hold-out) / test datalists: the one split rule.

The bundles (:func:`monai_aegis.bundle.bundle_datalists`) and the evaluation (:func:`monai_aegis.evaluation.
load_evaluation_splits`) both call :func:`dataset_splits`, so a model trained by a bundle and evaluated by the runner
sees the same patients in the same parts for the same ``seed`` and fractions.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from .datalist import fundus_datalist, kermany_datalist
from .split import patient_grouped_partition

__all__ = ["DATASET_LAYOUTS", "dataset_splits", "find_labels_csv"]

#: dataset layouts :func:`dataset_splits` reads from a folder
DATASET_LAYOUTS: tuple[str, ...] = ("kermany", "fundus")

#: share of a fundus CSV without a ``split`` column that becomes its test split (seeded with ``seed + 1``)
FUNDUS_TEST_FRACTION = 0.2


def find_labels_csv(root: str | os.PathLike) -> Path:
    """The labels CSV of a fundus dataset: ``root`` itself when it is a file, else ``root/labels.csv``, else the
    first ``*.csv`` in ``root`` (an APTOS 2019 ``train.csv``).

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no CSV.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder '{root}' does not exist.")
    if root.is_file():
        return root
    if (root / "labels.csv").is_file():
        return root / "labels.csv"
    found = sorted(root.glob("*.csv"))
    if not found:
        raise FileNotFoundError(f"no labels CSV in '{root}' (expected labels.csv or an APTOS train.csv).")
    return found[0]


def _group_key(items: list[dict[str, Any]]) -> str:
    """``"patient_id"``, or ``"image"`` when no item names its patient (APTOS 2019: each image its own group)."""
    return "patient_id" if any(it.get("patient_id") not in (None, "") for it in items) else "image"


def dataset_splits(
    dataset: str,
    root: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    holdout_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Patient-grouped, label-stratified datalists of a dataset folder.

    The training images are partitioned by patient into ``train`` / ``val`` (and ``holdout`` when
    ``holdout_fraction > 0``) with :func:`~monai_aegis.data.patient_grouped_partition` (``seed``); ``test`` is the
    dataset's own test split:

    * ``"kermany"``, a Kaggle-layout folder ``train/{NORMAL,PNEUMONIA}`` + ``test/``: the official train split is
      partitioned; ``test`` is the official test split. A folder without ``test/`` gets the validation part as its
      test split, with a warning (its test figures are then calibration-set figures).
    * ``"fundus"``, a folder with ``labels.csv`` (or an APTOS ``train.csv``, or the CSV itself): binary No DR (grade 0)
      vs DR (1-4); the CSV's ``split`` column when it has ``train`` and ``test`` rows, else a patient-grouped
      :data:`FUNDUS_TEST_FRACTION` of it (seed ``seed + 1``) is the test split. A CSV without patient ids (APTOS
      2019) is split by image.

    Args:
        dataset: one of :data:`DATASET_LAYOUTS`.
        root: the dataset folder (or, for ``"fundus"``, its CSV).
        val_fraction: share of the training images for validation (threshold calibration), in ``(0, 1)``.
        holdout_fraction: share of the training images held out for evaluation (0: no ``holdout`` part).
        seed: seed of the partition.

    Returns:
        ``{"train", "val", ["holdout",] "test"}`` -> items as the readers give them (``image``, ``label``,
        ``patient_id``, ...).

    Raises:
        ValueError: an unknown dataset, or fractions that leave no training part.
        FileNotFoundError: a missing folder or CSV.
    """
    from monai.utils import look_up_option

    dataset = look_up_option(str(dataset).lower(), DATASET_LAYOUTS)
    val_fraction, holdout_fraction = float(val_fraction), float(holdout_fraction)
    train_fraction = 1.0 - val_fraction - holdout_fraction
    if not (0 < val_fraction < 1 and 0 <= holdout_fraction < 1 and train_fraction > 0):
        raise ValueError(
            f"val_fraction {val_fraction} and holdout_fraction {holdout_fraction} must leave a training part."
        )
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder '{root}' does not exist.")
    if dataset == "kermany":
        train_all = kermany_datalist(root, "train")
        test = kermany_datalist(root, "test") if (root / "test").is_dir() else None
    else:
        items = fundus_datalist(find_labels_csv(root))
        if {"train", "test"} <= {it.get("split") for it in items}:
            train_all = [it for it in items if it.get("split") == "train"]
            test = [it for it in items if it.get("split") == "test"]
        else:
            train_all, test = patient_grouped_partition(
                items, (1.0 - FUNDUS_TEST_FRACTION, FUNDUS_TEST_FRACTION), group_key=_group_key(items), seed=seed + 1
            )
    fractions = (train_fraction, val_fraction) + ((holdout_fraction,) if holdout_fraction > 0 else ())
    parts = patient_grouped_partition(train_all, fractions, group_key=_group_key(train_all), seed=seed)
    out = {("train", "val", "holdout")[i]: list(part) for i, part in enumerate(parts)}
    if test is None:
        warnings.warn(
            f"'{root}' has no test/ folder: its validation part stands in as the test split.", UserWarning, stacklevel=2
        )
        test = out["val"]
    out["test"] = list(test)
    return out
