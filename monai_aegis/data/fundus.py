# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Diabetic-retinopathy fundus sets (the shared EyePACS copy, APTOS 2019, EyePACS / Kaggle DR 2015) as MONAI
datalists."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import PathLike, _as_int, _require_dir

__all__ = ["FUNDUS_FORMATS", "fundus_datalist"]

#: Known fundus CSV layouts: ``(image column, grade column, default image extension)``, tried in this order.
FUNDUS_FORMATS: dict[str, tuple[str, str, str]] = {
    "shared": ("file", "diagnosis_0_4", ".png"),  # the project's EyePACS copy (labels.csv)
    "aptos": ("id_code", "diagnosis", ".png"),  # APTOS 2019 train.csv
    "eyepacs": ("image", "level", ".jpeg"),  # Kaggle DR 2015 trainLabels.csv
}
_FUNDUS_IMAGE_SUFFIXES = (".png", ".jpeg", ".jpg", ".tif", ".tiff")
_EYE_ID = re.compile(r"^(?P<patient>.+?)[_-](?P<eye>left|right)$", re.IGNORECASE)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not columns:
        raise ValueError(f"CSV '{path}' is empty (no header row).")
    return columns, rows


def fundus_datalist(
    csv_path: PathLike,
    image_dir: PathLike | None = None,
    *,
    binary: bool = True,
    split: str | Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    split_column: str | None = "split",
    patient_column: str | None = None,
    extension: str | None = None,
) -> list[dict[str, Any]]:
    """Datalist of a diabetic-retinopathy fundus set graded 0-4 (APTOS 2019, EyePACS / Kaggle DR 2015).

    The CSV layout is detected from its header (explicit column names override):

    =============  ===============  ===============  ===========================================
    format         image column     grade column     image file
    =============  ===============  ===============  ===========================================
    shared copy    ``file``         ``diagnosis_0_4`` path relative to the CSV folder / ``image_dir``
    APTOS 2019     ``id_code``      ``diagnosis``    ``<image_dir>/<id_code>.png``
    EyePACS        ``image``        ``level``        ``<image_dir>/<image>.jpeg``
    =============  ===============  ===============  ===========================================

    An id without extension is matched to the file in ``image_dir`` with the format's extension, else any of
    png/jpeg/jpg/tif (so converted copies work). Without ``image_dir`` the first of ``<csv stem>_images``,
    ``train_images``, ``images``, ``train`` and the CSV's folder that holds the first row's image is used.

    Each item: ``{"image", "label", "grade" (0-4), "split"?, "patient_id"?, "eye"?}``. ``label`` is the
    binary referable-DR target (0 = No DR for grade 0, 1 = DR for grades 1-4) when ``binary`` else the grade.
    The patient id comes from ``patient_column`` / a ``patient_id`` column, or is parsed from EyePACS names
    (``10_left`` -> patient ``10``, eye ``left``); APTOS has none (each image is then its own group in
    :func:`patient_grouped_split`).

    Args:
        csv_path: the label CSV.
        image_dir: the image folder; see above for the default.
        binary: binarise grades (default) or keep them (``label`` in 0-4).
        split: keep only rows whose split column has this value (or one of these values).
        image_column: column with the image id or relative path (overrides detection).
        label_column: column with the 0-4 grade (overrides detection).
        split_column: column holding the split name, used when present (``None`` to ignore).
        patient_column: column with a patient id (default: ``patient_id`` when present).
        extension: extension appended to ids without one (overrides the format default).

    Raises:
        FileNotFoundError: missing CSV, image folder or image files (the first missing ones are named).
        ValueError: CSV missing the needed columns, a grade outside 0-4 or not an integer, an unknown split
            value, or no rows left.
    """
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"fundus label CSV not found: '{path}'.")
    path = path.resolve()
    columns, rows = _read_csv(path)

    fmt_ext = ".png"
    if image_column is None or label_column is None:
        detected = next((f for f in FUNDUS_FORMATS.values() if {f[0], f[1]} <= set(columns)), None)
        if detected is None:
            known = "; ".join(f"{k}: '{v[0]}' + '{v[1]}'" for k, v in FUNDUS_FORMATS.items())
            raise ValueError(
                f"CSV '{path}' has columns {columns}, which match no known fundus layout ({known}). "
                "Pass image_column= and label_column=."
            )
        image_column = image_column or detected[0]
        label_column = label_column or detected[1]
        fmt_ext = detected[2]
    missing = [c for c in (image_column, label_column) if c not in columns]
    if missing:
        raise ValueError(f"CSV '{path}' is missing column(s) {missing}; it has {columns}.")
    if patient_column is not None and patient_column not in columns:
        raise ValueError(f"CSV '{path}' has no patient column '{patient_column}'; it has {columns}.")
    if patient_column is None and "patient_id" in columns:
        patient_column = "patient_id"
    use_split = split_column is not None and split_column in columns
    if split is not None and not use_split:
        raise ValueError(f"split={split!r} requested but CSV '{path}' has no split column '{split_column}'.")
    ext = extension if extension is None or extension.startswith(".") else f".{extension}"
    ext = ext or fmt_ext

    if not rows:
        raise ValueError(f"CSV '{path}' has a header but no rows.")

    indexes: dict[Path, dict[str, str]] = {}

    def resolve(folder: Path, value: str) -> Path | None:
        if Path(value).suffix.lower() in _FUNDUS_IMAGE_SUFFIXES:
            p = folder / value
            return p if p.is_file() else None
        p = folder / f"{value}{ext}"
        if p.is_file():
            return p
        if folder not in indexes:  # other extension (e.g. EyePACS converted to PNG): list the folder once
            indexes[folder] = _stem_index(folder)
        name = indexes[folder].get(value)
        return folder / name if name is not None else None

    if image_dir is None:
        first = rows[0][image_column]
        candidates = [path.parent / f"{path.stem}_images", path.parent / "train_images", path.parent / "images",
                      path.parent / "train", path.parent]
        folder = next((c for c in candidates if c.is_dir() and resolve(c, first) is not None), None)
        if folder is None:
            raise FileNotFoundError(
                f"could not find the image for '{first}' (first row of '{path}') in any of "
                f"{[str(c) for c in candidates]}; pass image_dir=."
            )
    else:
        folder = _require_dir(image_dir, "fundus image folder")

    wanted = None if split is None else ({split} if isinstance(split, str) else set(split))
    if wanted is not None:
        present = {r[split_column] for r in rows}  # type: ignore[index]
        unknown = sorted(wanted - present)
        if unknown:
            raise ValueError(f"split value(s) {unknown} not found in column '{split_column}' of '{path}'; "
                             f"it has {sorted(present)}.")

    items: list[dict[str, Any]] = []
    missing_files: list[str] = []
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        if wanted is not None and row[split_column] not in wanted:  # type: ignore[index]
            continue
        value = row[image_column]
        if not value:
            raise ValueError(f"CSV '{path}' row {i}: empty '{image_column}'.")
        grade = _as_int(row[label_column], f"CSV '{path}' row {i}: column '{label_column}'", "grade")
        if not 0 <= grade <= 4:
            raise ValueError(f"CSV '{path}' row {i}: grade '{label_column}'={grade} is outside 0-4 ({value}).")
        file = resolve(folder, value)
        if file is None:
            missing_files.append(value)
            continue
        item: dict[str, Any] = {"image": str(file), "label": int(grade > 0) if binary else grade, "grade": grade}
        if use_split:
            item["split"] = row[split_column]  # type: ignore[index]
        stem = Path(value).name
        stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix.lower() in _FUNDUS_IMAGE_SUFFIXES else stem
        eye = _EYE_ID.match(stem)
        if patient_column is not None and row.get(patient_column):
            item["patient_id"] = row[patient_column]
        elif eye is not None:
            item["patient_id"] = eye.group("patient")
        if "eye" in columns and row.get("eye"):
            item["eye"] = row["eye"]
        elif eye is not None:
            item["eye"] = eye.group("eye").lower()
        items.append(item)
    if missing_files:
        shown = ", ".join(missing_files[:5]) + (f" (+{len(missing_files) - 5} more)" if len(missing_files) > 5 else "")
        raise FileNotFoundError(f"{len(missing_files)} image(s) listed in '{path}' not found in '{folder}': {shown}.")
    if not items:
        raise ValueError(f"no rows of '{path}' selected (split={split!r}).")
    return items


def _stem_index(folder: Path) -> dict[str, str]:
    """``{stem: file name}`` for the images directly in ``folder`` (first by sorted name wins)."""
    index: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in _FUNDUS_IMAGE_SUFFIXES:
            index.setdefault(stem, name)
    return index
