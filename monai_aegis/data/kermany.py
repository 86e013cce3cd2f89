# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The Kaggle "Chest X-Ray Images (Pneumonia)" (Kermany) folders as a MONAI datalist."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import IMAGE_EXTENSIONS, PathLike, _find_child_dir, _image_suffix, _require_dir, list_image_files

__all__ = ["KERMANY_CLASSES", "KERMANY_SPLITS", "kermany_datalist", "parse_kermany_patient_id"]

#: Kermany class folders in label order: ``NORMAL`` = 0, ``PNEUMONIA`` = 1.
KERMANY_CLASSES: tuple[str, ...] = ("NORMAL", "PNEUMONIA")

KERMANY_SPLITS = ("train", "val", "test")
_KERMANY_EXTENSIONS = (".png", ".jpg", ".jpeg")
# personN_bacteria_M / personN_virus_M -> personN ; IM-NNNN-NNNN[-NNNN] -> IM-NNNN ;
# NORMAL2-IM-NNNN-NNNN[-NNNN] -> NORMAL2-IM-NNNN
_KERMANY_PATIENT = re.compile(r"^(person\d+|NORMAL\d*-IM-\d+|IM-\d+)(?=[_-]|$)", re.IGNORECASE)


def parse_kermany_patient_id(name: PathLike) -> str:
    """Patient id encoded in a Kermany chest X-ray file name.

    ``person123_bacteria_456`` -> ``person123``; ``IM-0001-0001`` -> ``IM-0001``;
    ``NORMAL2-IM-0095-0001`` -> ``NORMAL2-IM-0095``. Names that follow none of these patterns are their own
    patient (the stem is returned), so a patient-grouped split never merges unrelated images.

    Args:
        name: a file name or path (directories and the extension are ignored).
    """
    stem = Path(name).name
    suffix = _image_suffix(stem, _KERMANY_EXTENSIONS + IMAGE_EXTENSIONS)
    if suffix:
        stem = stem[: -len(suffix)]
    m = _KERMANY_PATIENT.match(stem)
    return m.group(1) if m else stem


def _kermany_subtype(stem: str, label: int) -> str:
    if label == 0:
        return "normal"
    low = stem.lower()
    for sub in ("bacteria", "virus"):
        if sub in low:
            return sub
    return "pneumonia"


def _kermany_split(folder: Path, split: str | None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for label, cls in enumerate(KERMANY_CLASSES):
        cls_dir = _find_child_dir(folder, cls)
        if cls_dir is None:
            raise FileNotFoundError(
                f"Kermany class folder '{cls}' is missing in '{folder}' "
                f"(expected {'/'.join(KERMANY_CLASSES)} sub-folders)."
            )
        files = list_image_files(cls_dir, _KERMANY_EXTENSIONS, recursive=False)
        if not files:
            raise ValueError(
                f"Kermany class folder '{cls_dir}' holds no images (looked for {', '.join(_KERMANY_EXTENSIONS)}, "
                "any case)."
            )
        for f in files:
            stem = Path(f).name[: -len(_image_suffix(f, _KERMANY_EXTENSIONS) or "")]
            item: dict[str, Any] = {
                "image": f,
                "label": label,
                "class_name": cls,
                "patient_id": parse_kermany_patient_id(stem),
                "subtype": _kermany_subtype(stem, label),
            }
            if split is not None:
                item["split"] = split
            items.append(item)
    return items


def kermany_datalist(root: PathLike, splits: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Datalist of the Kaggle "Chest X-Ray Images (Pneumonia)" (Kermany et al. 2018) folder layout.

    ``<root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.{png,jpeg,jpg}`` (folder names and extensions matched
    case-insensitively). ``root`` may also be one split folder holding ``NORMAL``/``PNEUMONIA`` directly.

    Each item: ``{"image": abs path, "label": 0 (NORMAL) | 1 (PNEUMONIA), "class_name", "patient_id"
    (see :func:`parse_kermany_patient_id`), "subtype" ("normal" | "bacteria" | "virus"), "split"}``.
    ``split`` is absent when ``root`` is a single split folder.

    Args:
        root: the dataset folder.
        splits: the split(s) to read (``"train"``, ``"val"``, ``"test"``); ``None`` reads every split folder present.

    Returns:
        the items ordered by split (train, val, test), label, then file name.

    Raises:
        FileNotFoundError: missing ``root``, missing requested split, or missing class folder.
        ValueError: an empty class folder, an unknown split name, or no split folder at all.
    """
    base = _require_dir(root, "Kermany chest X-ray folder")
    if splits is None and all(_find_child_dir(base, c) is not None for c in KERMANY_CLASSES):
        return _kermany_split(base, None)
    if isinstance(splits, str):
        splits = [splits]
    if splits is not None:
        unknown = [s for s in splits if s not in KERMANY_SPLITS]
        if unknown:
            raise ValueError(f"unknown Kermany split(s) {unknown}; choose from {list(KERMANY_SPLITS)}.")
        wanted = list(splits)
    else:
        wanted = [s for s in KERMANY_SPLITS if _find_child_dir(base, s) is not None]
        if not wanted:
            raise ValueError(
                f"'{base}' has neither split folders ({'/'.join(KERMANY_SPLITS)}) nor class folders "
                f"({'/'.join(KERMANY_CLASSES)}); expected the Kaggle layout <root>/<split>/<class>/*.png."
            )
    items: list[dict[str, Any]] = []
    for s in wanted:
        folder = _find_child_dir(base, s)
        if folder is None:
            raise FileNotFoundError(f"Kermany split folder '{s}' not found in '{base}'.")
        items.extend(_kermany_split(folder, s))
    return items
