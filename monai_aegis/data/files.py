# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Image files as MONAI datalists: listing folders, expanding paths, any list of DICOM / NIfTI / PNG / JPEG files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "PathLike", "expand_image_paths", "image_datalist", "list_image_files"]

PathLike = Union[str, os.PathLike]

#: File name endings recognised as images (matched case-insensitively); all readable by ``monai.transforms.LoadImage``.
IMAGE_EXTENSIONS: tuple[str, ...] = (".dcm", ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")


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
