# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from ..networks.layers.cushion import (
    resolve_cushion,  # re-exported: its home is the Cushion layer
)
from .array import Cushion
from .benign import (
    RandBenignShift,
    RandBenignShiftD,
    RandBenignShiftd,
    RandBenignShiftDict,
)
from .dictionary import CushionD, Cushiond, CushionDict
from .outlier import (
    OUTLIER_KINDS,
    RandOutlier,
    RandOutlierD,
    RandOutlierd,
    RandOutlierDict,
)
from .preprocessing import (
    ConvertChannels,
    ConvertChannelsD,
    ConvertChannelsd,
    ConvertChannelsDict,
    ScaleIntensityByDtype,
    ScaleIntensityByDtypeD,
    ScaleIntensityByDtyped,
    ScaleIntensityByDtypeDict,
    classification_augmentation,
    classification_transforms,
)
from .tolerant import TolerantTransformD, TolerantTransformd, TolerantTransformDict

__all__ = [
    "ConvertChannels",
    "ConvertChannelsD",
    "ConvertChannelsd",
    "ConvertChannelsDict",
    "ScaleIntensityByDtype",
    "ScaleIntensityByDtypeD",
    "ScaleIntensityByDtyped",
    "ScaleIntensityByDtypeDict",
    "classification_augmentation",
    "classification_transforms",
    "TolerantTransformD",
    "TolerantTransformDict",
    "TolerantTransformd",
    "Cushion",
    "CushionD",
    "CushionDict",
    "Cushiond",
    "OUTLIER_KINDS",
    "RandBenignShift",
    "RandBenignShiftD",
    "RandBenignShiftDict",
    "RandBenignShiftd",
    "RandOutlier",
    "RandOutlierD",
    "RandOutlierDict",
    "RandOutlierd",
    "resolve_cushion",
]
