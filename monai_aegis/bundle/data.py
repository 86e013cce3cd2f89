"""Datalists of the bundles: the embedded chest X-ray sample by default, a full dataset when ``dataset_dir`` is set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_DATASETS", "bundle_datalists"]

#: dataset layouts a bundle reads from ``dataset_dir``
BUNDLE_DATASETS = ("kermany", "fundus")


def bundle_datalists(
    dataset: str = "kermany",
    dataset_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """``{"train", "val", "test"}`` MONAI datalists (``{"image": path, "label": int}``) for a bundle.

    * ``dataset_dir`` empty or ``None``: the embedded 320-image Kermany sample shipped with the package (its own
      train / val / test split). Only for ``"kermany"``: no fundus images are embedded (their licence).
    * ``"kermany"`` and a folder with the Kaggle layout ``train/{NORMAL,PNEUMONIA}`` (+ ``test/``): the official
      train split, partitioned by patient into train / val; ``test`` is the official test split.
    * ``"fundus"`` and a folder with ``labels.csv`` (APTOS 2019 / EyePACS / the shared copy) or the CSV itself:
      binary No DR (grade 0) vs DR (1-4); the CSV's ``split`` column when it has one, else a patient-grouped split.

    Args:
        dataset: one of :data:`BUNDLE_DATASETS`.
        dataset_dir: dataset folder, or empty for the embedded sample.
        val_fraction: share of the training images used for validation (threshold calibration).
        seed: seed of the patient-grouped split.
        max_items: keep at most this many items per split (a class-balanced prefix; for smoke tests).

    Raises:
        ValueError: an unknown dataset, or ``"fundus"`` without ``dataset_dir``.
        FileNotFoundError: a missing folder or CSV.
    """
    from monai.utils import look_up_option

    dataset = look_up_option(str(dataset).lower(), BUNDLE_DATASETS)
    if not dataset_dir:
        if dataset != "kermany":
            raise ValueError(
                f"no embedded sample for dataset {dataset!r} (the fundus licence does not allow redistribution): "
                "set dataset_dir to an APTOS 2019 / EyePACS folder, e.g. --dataset_dir /data/aptos2019."
            )
        from ..data import load_sample_datalist

        lists = {s: load_sample_datalist(s) for s in ("train", "val", "test")}
    else:
        root = Path(dataset_dir)
        if not root.exists():
            raise FileNotFoundError(f"dataset_dir '{root}' does not exist.")
        lists = _kermany(root, val_fraction, seed) if dataset == "kermany" else _fundus(root, val_fraction, seed)
    lists = {k: [{"image": str(it["image"]), "label": int(it["label"])} for it in v] for k, v in lists.items()}
    if max_items is not None:
        lists = {k: _balanced_prefix(v, int(max_items)) for k, v in lists.items()}
    for k, v in lists.items():
        if not v:
            raise ValueError(f"the {k} split of {dataset!r} in '{dataset_dir or 'embedded sample'}' is empty.")
    return lists


def _kermany(root: Path, val_fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    from ..data import kermany_datalist, patient_grouped_split

    train, val = patient_grouped_split(kermany_datalist(root, "train"), val_fraction=val_fraction, seed=seed)
    test = kermany_datalist(root, "test") if (root / "test").is_dir() else list(val)
    return {"train": list(train), "val": list(val), "test": list(test)}


def _fundus(root: Path, val_fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    from ..data import fundus_datalist, patient_grouped_split

    csv = root / "labels.csv" if root.is_dir() else root
    if root.is_dir() and not csv.is_file():
        found = sorted(root.glob("*.csv"))
        if not found:
            raise FileNotFoundError(f"no labels CSV in '{root}' (expected labels.csv or an APTOS train.csv).")
        csv = found[0]
    items = fundus_datalist(csv)
    splits = {it.get("split") for it in items}
    if {"train", "test"} <= splits:
        train_all = [it for it in items if it.get("split") == "train"]
        test = [it for it in items if it.get("split") == "test"]
    else:
        train_all, test = patient_grouped_split(items, val_fraction=0.2, seed=seed + 1)
    train, val = patient_grouped_split(list(train_all), val_fraction=val_fraction, seed=seed)
    return {"train": list(train), "val": list(val), "test": list(test)}


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
