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

The readers live in one module each (:mod:`.files`, :mod:`.kermany`, :mod:`.fundus`, :mod:`.medmnist`,
:mod:`.checks`); this module gathers them under the name the package has always used.
"""

from .checks import check_datalist
from .files import IMAGE_EXTENSIONS, expand_image_paths, image_datalist, list_image_files
from .fundus import FUNDUS_FORMATS, fundus_datalist
from .kermany import KERMANY_CLASSES, kermany_datalist, parse_kermany_patient_id
from .medmnist import medmnist_datalist

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
