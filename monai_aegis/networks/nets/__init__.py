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
from .shield import Shield, feature_shapes

__all__ = [
    "CLASSIFIERS",
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
