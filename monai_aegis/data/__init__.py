# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Datasets for monai_aegis: readers into MONAI datalists, patient-grouped splits, the one dataset split rule
(:func:`dataset_splits`), the embedded sample.

The preprocessing (``classification_transforms`` and its transforms) lives in :mod:`monai_aegis.transforms`; the old
names here still resolve, with a ``FutureWarning``.
"""

from typing import Any

from .datalist import (
    FUNDUS_FORMATS,
    IMAGE_EXTENSIONS,
    KERMANY_CLASSES,
    check_datalist,
    expand_image_paths,
    fundus_datalist,
    image_datalist,
    kermany_datalist,
    list_image_files,
    medmnist_datalist,
    parse_kermany_patient_id,
)
from .datasets import DATASET_LAYOUTS, dataset_splits, find_labels_csv
from .sample import SAMPLE_SPLITS, load_sample_arrays, load_sample_datalist, sample_dir
from .split import patient_grouped_partition, patient_grouped_split

__all__ = [
    "DATASET_LAYOUTS",
    "FUNDUS_FORMATS",
    "IMAGE_EXTENSIONS",
    "KERMANY_CLASSES",
    "SAMPLE_SPLITS",
    "check_datalist",
    "dataset_splits",
    "expand_image_paths",
    "find_labels_csv",
    "fundus_datalist",
    "image_datalist",
    "kermany_datalist",
    "list_image_files",
    "load_sample_arrays",
    "load_sample_datalist",
    "medmnist_datalist",
    "parse_kermany_patient_id",
    "patient_grouped_partition",
    "patient_grouped_split",
    "sample_dir",
]

#: preprocessing names that moved to monai_aegis.transforms (resolved lazily, with a FutureWarning)
_MOVED_TO_TRANSFORMS = (
    "ConvertChannels",
    "ConvertChannelsD",
    "ConvertChannelsd",
    "ConvertChannelsDict",
    "ScaleIntensityByDtype",
    "ScaleIntensityByDtypeD",
    "ScaleIntensityByDtyped",
    "ScaleIntensityByDtypeDict",
    "classification_transforms",
)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_TRANSFORMS:
        import warnings

        from .. import transforms

        warnings.warn(f"monai_aegis.data.{name} moved to monai_aegis.transforms.{name}.", FutureWarning, stacklevel=2)
        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
