"""Classifier architectures by name (moved to :mod:`monai_aegis.networks.nets.classifiers`; re-exported here)."""

from ..networks.nets.classifiers import (
    CLASSIFIERS,
    SMALL_VGG_LAYERS,
    build_classifier,
    load_classifier,
    resnet18_classifier,
    save_classifier,
    small_vgg,
)

__all__ = [
    "CLASSIFIERS",
    "SMALL_VGG_LAYERS",
    "build_classifier",
    "load_classifier",
    "resnet18_classifier",
    "save_classifier",
    "small_vgg",
]
