# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Datasets for monai_aegis: readers into MONAI datalists, patient-grouped splits, preprocessing, embedded sample."""

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
from .sample import SAMPLE_SPLITS, load_sample_arrays, load_sample_datalist, sample_dir
from .split import patient_grouped_partition, patient_grouped_split
from .transforms import (
    ConvertChannels,
    ConvertChannelsD,
    ConvertChannelsd,
    ConvertChannelsDict,
    ScaleIntensityByDtype,
    ScaleIntensityByDtypeD,
    ScaleIntensityByDtyped,
    ScaleIntensityByDtypeDict,
    classification_transforms,
)

__all__ = [
    "ConvertChannels",
    "ConvertChannelsD",
    "ConvertChannelsDict",
    "ConvertChannelsd",
    "FUNDUS_FORMATS",
    "IMAGE_EXTENSIONS",
    "KERMANY_CLASSES",
    "SAMPLE_SPLITS",
    "ScaleIntensityByDtype",
    "ScaleIntensityByDtypeD",
    "ScaleIntensityByDtypeDict",
    "ScaleIntensityByDtyped",
    "check_datalist",
    "classification_transforms",
    "expand_image_paths",
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
