# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Readers that turn real dataset layouts into MONAI datalists.

A *datalist* is a list of dicts ``[{"image": path, "label": int, ...}, ...]``, the input of
:class:`monai.data.Dataset` / :class:`monai.data.CacheDataset` with :class:`monai.transforms.LoadImaged`
(see :func:`monai_aegis.transforms.classification_transforms`). Every reader returns absolute paths as ``str``,
sorted deterministically, and raises a clear error for bad data (missing folder, empty class folder,
CSV without the needed columns, label out of range, missing image).

Readers:

* :func:`kermany_datalist` -- Kaggle "Chest X-Ray Images (Pneumonia)" folders
  ``<root>/{train,val,test}/{NORMAL,PNEUMONIA}``.
* :func:`fundus_datalist` -- APTOS 2019 / EyePACS (Kaggle DR 2015) CSV + image folder, 0-4 grades.
* :func:`medmnist_datalist` -- MedMNIST ``.npz`` files (items carry the image array itself).
* :func:`image_datalist` -- any list or folder of DICOM, NIfTI, PNG or JPEG files.

and :func:`check_datalist` to validate labels and, optionally, load every file.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..utils import error_line

__all__ = [
    "FUNDUS_FORMATS",
    "IMAGE_EXTENSIONS",
    "KERMANY_CLASSES",
    "check_datalist",
    "expand_image_paths",
    "fundus_datalist",
    "image_datalist",
    "kermany_datalist",
    "list_image_files",
    "medmnist_datalist",
    "parse_kermany_patient_id",
]

PathLike = Union[str, os.PathLike]

#: File name endings recognised as images (matched case-insensitively); all readable by ``monai.transforms.LoadImage``.
IMAGE_EXTENSIONS: tuple[str, ...] = (".dcm", ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")

#: Kermany class folders in label order: ``NORMAL`` = 0, ``PNEUMONIA`` = 1.
KERMANY_CLASSES: tuple[str, ...] = ("NORMAL", "PNEUMONIA")

_KERMANY_SPLITS = ("train", "val", "test")
_KERMANY_EXTENSIONS = (".png", ".jpg", ".jpeg")
# personN_bacteria_M / personN_virus_M -> personN ; IM-NNNN-NNNN[-NNNN] -> IM-NNNN ;
# NORMAL2-IM-NNNN-NNNN[-NNNN] -> NORMAL2-IM-NNNN
_KERMANY_PATIENT = re.compile(r"^(person\d+|NORMAL\d*-IM-\d+|IM-\d+)(?=[_-]|$)", re.IGNORECASE)

#: Known fundus CSV layouts: ``(image column, grade column, default image extension)``, tried in this order.
FUNDUS_FORMATS: dict[str, tuple[str, str, str]] = {
    "shared": ("file", "diagnosis_0_4", ".png"),  # the project's EyePACS copy (labels.csv)
    "aptos": ("id_code", "diagnosis", ".png"),  # APTOS 2019 train.csv
    "eyepacs": ("image", "level", ".jpeg"),  # Kaggle DR 2015 trainLabels.csv
}
_FUNDUS_IMAGE_SUFFIXES = (".png", ".jpeg", ".jpg", ".tif", ".tiff")
_EYE_ID = re.compile(r"^(?P<patient>.+?)[_-](?P<eye>left|right)$", re.IGNORECASE)


def _image_suffix(path: PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> str | None:
    """The matching entry of ``extensions`` for ``path`` (case-insensitive, longest first), or ``None``."""
    name = os.fspath(path).lower()
    for ext in sorted(extensions, key=len, reverse=True):
        if name.endswith(ext.lower()):
            return ext
    return None


def _is_dicom_file(path: Path) -> bool:
    """``True`` when ``path`` carries the DICOM Part 10 magic ``DICM`` at byte 128 (extension-less DICOM)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _as_int(value: Any, what: str, kind: str = "class index") -> int:
    """``int(value)`` for integral numbers or numeric strings (``"2"``, ``2.0``), else a ``ValueError`` on ``what``."""
    f = float("nan")
    if not isinstance(value, (bool, np.bool_)):
        try:
            f = float(value)
        except (TypeError, ValueError):
            pass
    if not np.isfinite(f) or f != int(f):
        raise ValueError(f"{what} must be an integer {kind}, got {value!r}.")
    return int(f)


def _require_dir(path: PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: '{p}'.")
    if not p.is_dir():
        raise NotADirectoryError(f"{what} must be a folder, got a file: '{p}'.")
    return p.resolve()


def _find_child_dir(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name``, matched case-insensitively (exact match preferred)."""
    exact = parent / name
    if exact.is_dir():
        return exact
    matches = sorted(c for c in parent.iterdir() if c.is_dir() and c.name.lower() == name.lower())
    return matches[0] if matches else None


def list_image_files(
    folder: PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True
) -> list[str]:
    """Sorted absolute paths of the files under ``folder`` whose names end in one of ``extensions``.

    Args:
        folder: the folder to scan.
        extensions: accepted endings, matched case-insensitively (``".nii.gz"`` works).
        recursive: also scan sub-folders.

    Returns:
        sorted absolute paths as ``str`` (hidden files, e.g. ``._x.png`` from macOS, are skipped).

    Raises:
        FileNotFoundError: when ``folder`` does not exist.
    """
    root = _require_dir(folder, "image folder")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(str(p) for p in it if p.is_file() and not p.name.startswith(".") and _image_suffix(p, extensions))


# ------------------------------------------------------------------------------------------------------------------
# Kermany chest X-rays
# ------------------------------------------------------------------------------------------------------------------
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
        unknown = [s for s in splits if s not in _KERMANY_SPLITS]
        if unknown:
            raise ValueError(f"unknown Kermany split(s) {unknown}; choose from {list(_KERMANY_SPLITS)}.")
        wanted = list(splits)
    else:
        wanted = [s for s in _KERMANY_SPLITS if _find_child_dir(base, s) is not None]
        if not wanted:
            raise ValueError(
                f"'{base}' has neither split folders ({'/'.join(_KERMANY_SPLITS)}) nor class folders "
                f"({'/'.join(KERMANY_CLASSES)}); expected the Kaggle layout <root>/<split>/<class>/*.png."
            )
    items: list[dict[str, Any]] = []
    for s in wanted:
        folder = _find_child_dir(base, s)
        if folder is None:
            raise FileNotFoundError(f"Kermany split folder '{s}' not found in '{base}'.")
        items.extend(_kermany_split(folder, s))
    return items


# ------------------------------------------------------------------------------------------------------------------
# Fundus (APTOS 2019 / EyePACS)
# ------------------------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------------------------
# MedMNIST
# ------------------------------------------------------------------------------------------------------------------
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
    if split not in _KERMANY_SPLITS:
        raise ValueError(f"unknown MedMNIST split {split!r}; choose from {list(_KERMANY_SPLITS)}.")
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


# ------------------------------------------------------------------------------------------------------------------
# Any image files
# ------------------------------------------------------------------------------------------------------------------
def expand_image_paths(
    sources: Sequence[PathLike],
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
    *,
    strict: bool = True,
    what: str = "image file or folder",
) -> list[str]:
    """Absolute paths of the image files named by ``sources`` (files and folders), in the given order; folders are
    listed with :func:`list_image_files`.

    Args:
        sources: files and folders.
        extensions: accepted endings for folder scans (and, when ``strict``, for named files).
        recursive: also scan sub-folders.
        strict: a folder without images, or a named file that is neither of ``extensions`` nor an extension-less
            DICOM, raises ``ValueError``. Otherwise empty folders add nothing and named files are kept whatever their
            type (for readers that report unreadable files per file, e.g. screening).
        what: how a missing source is called in the error message.

    Raises:
        FileNotFoundError: a source that does not exist.
        ValueError: see ``strict``.
    """
    paths: list[str] = []
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            found = list_image_files(p, extensions, recursive)
            if strict and not found:
                raise ValueError(f"no image files ({', '.join(extensions)}, any case) found under '{p}'.")
            paths.extend(found)
        elif p.is_file():
            if strict and _image_suffix(p, extensions) is None and not _is_dicom_file(p):
                raise ValueError(f"unsupported image file type: '{p}' (expected one of {', '.join(extensions)}).")
            paths.append(str(p.resolve()))
        else:
            raise FileNotFoundError(f"{what} not found: '{p}'.")
    return paths


def image_datalist(
    files: PathLike | Iterable[PathLike],
    labels: Sequence[int] | Mapping[str, int] | Callable[[str], int] | str | None = None,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
) -> list[dict[str, Any]]:
    """Datalist of DICOM, NIfTI, PNG or JPEG files, given as a folder or a list of files/folders.

    Folders are scanned (recursively by default) for ``extensions`` (``.dcm``, ``.nii``, ``.nii.gz``, ``.png``,
    ``.jpg``, ``.jpeg``, any case). Explicitly listed files must exist and have one of these endings, or be
    extension-less DICOM (``DICM`` magic). Every item is readable by ``monai.transforms.LoadImage`` (pydicom /
    ITK for DICOM, nibabel for NIfTI, PIL for PNG/JPEG).

    Args:
        files: a folder, a file, or an iterable of files and folders. Order is kept for explicit files;
            folder contents are sorted.
        labels: ``None`` (no ``label`` key); a sequence of ints aligned with the resulting files; a mapping
            from absolute path or file name to label; a callable ``path -> label``; or
            ``"subfolder"``: the name of each file's parent folder is its class, classes sorted by name get
            labels 0..K-1 (ImageFolder layout; ``class_name`` is added to each item).
        extensions: accepted file endings.
        recursive: scan sub-folders.

    Returns:
        ``[{"image": abs path, "label"?: int, "class_name"?: str}, ...]``.

    Raises:
        FileNotFoundError: a missing file or folder.
        ValueError: no image found, an unsupported file type, labels of the wrong length, a file without a
            label in the mapping, or a non-integer label.
    """
    sources = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not sources:
        raise ValueError("image_datalist got an empty list of files.")
    paths = expand_image_paths(sources, extensions, recursive)

    items: list[dict[str, Any]] = [{"image": f} for f in paths]
    if labels is None:
        return items
    if isinstance(labels, str):
        if labels != "subfolder":
            raise ValueError(f"labels={labels!r} not understood; use 'subfolder', a sequence, a mapping or a callable.")
        classes = sorted({Path(f).parent.name for f in paths})
        lookup = {c: i for i, c in enumerate(classes)}
        for it in items:
            it["class_name"] = Path(it["image"]).parent.name
            it["label"] = lookup[it["class_name"]]
        return items
    if callable(labels) and not isinstance(labels, Mapping):
        values = [labels(f) for f in paths]
    elif isinstance(labels, Mapping):
        values = []
        for f in paths:
            key = next((k for k in (f, Path(f).name) if k in labels), None)
            if key is None:
                raise ValueError(f"no label for '{f}' in the labels mapping (keys are file names or paths).")
            values.append(labels[key])
    else:
        values = list(labels)
        if len(values) != len(paths):
            raise ValueError(f"got {len(values)} labels for {len(paths)} image files; they must match one to one.")
    for it, v in zip(items, values):
        it["label"] = _as_int(v, f"label of '{it['image']}'")
    return items


# ------------------------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------------------------
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
