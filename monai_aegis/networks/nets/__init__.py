# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .aegis import SHIELD_INPUTS, AegisWrapper, build_aegis, calibrated_thresholds, per_sample_threshold
from .classifiers import (
    CLASSIFIERS,
    SMALL_VGG_LAYERS,
    build_classifier,
    load_classifier,
    resnet18_classifier,
    save_classifier,
    small_vgg,
)
from .efficientnet_lite import (
    EFFICIENTNET_LITE_VARIANTS,
    EfficientNetLite,
    efficientnet_lite,
    efficientnet_lite_weights,
)
from .shield import Shield, feature_shapes

__all__ = [
    "CLASSIFIERS",
    "EFFICIENTNET_LITE_VARIANTS",
    "EfficientNetLite",
    "efficientnet_lite",
    "efficientnet_lite_weights",
    "SHIELD_INPUTS",
    "SMALL_VGG_LAYERS",
    "AegisWrapper",
    "Shield",
    "build_aegis",
    "build_classifier",
    "feature_shapes",
    "calibrated_thresholds",
    "per_sample_threshold",
    "load_classifier",
    "resnet18_classifier",
    "save_classifier",
    "small_vgg",
]
