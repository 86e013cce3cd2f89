# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Classifier architectures the evaluation command line and the experiment scripts rebuild from a name.

A saved :class:`~monai_aegis.networks.AegisWrapper` stores weights, not code, so ``python -m monai_aegis evaluate``
needs the architecture by name: ``"resnet18"`` (torchvision, input stem for any channel count, trained from
scratch), ``"small_vgg"`` (a four-block VGG-style network, cheap enough for CPU experiments at 64 px),
``"efficientnet_lite"`` (ImageNet-pretrained EfficientNet-Lite from the ``pretrained`` extra) or any
``"package.module:callable"`` taking ``in_channels`` and ``num_classes``.
"""

from __future__ import annotations

import importlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from .efficientnet_lite import efficientnet_lite

__all__ = [
    "CLASSIFIERS",
    "SMALL_VGG_LAYERS",
    "architecture_name",
    "build_classifier",
    "load_classifier",
    "resnet18_classifier",
    "save_classifier",
    "small_vgg",
]

_FORMAT = "monai_aegis.classifier/1"

#: hooked layers of :func:`small_vgg`: the ReLU output of each block, shallow (full resolution) to deep
SMALL_VGG_LAYERS: tuple[str, ...] = ("block1", "block2", "block3", "block4")  # = LAYER_PRESETS["small_vgg"]


def small_vgg(
    in_channels: int = 1, num_classes: int = 2, width: int = 32, convs_per_block: int = 1, stem_stride: int = 2
) -> nn.Sequential:
    """A VGG-style classifier: four blocks of ``convs_per_block`` x (3x3 conv, BatchNorm, ReLU), 2x max pooling
    between blocks (channels ``width, 2 width, 4 width, 8 width``), global average pooling and a linear layer.
    The first convolution has stride ``stem_stride`` (2: like ResNet's stem, the blocks run at 1/2 ... 1/16 of the
    input resolution, which keeps 64 px CPU experiments cheap).

    The blocks are named ``block1`` ... ``block4`` (:data:`SMALL_VGG_LAYERS`), so their outputs (shallow, high
    resolution, to deep) are the natural hooks, like the paper's VGG-16 ReLU layers 3/6/9/12.

    Args:
        in_channels: input channels (1 for X-rays, 3 for fundus photographs).
        num_classes: output logits.
        width: channels of the first block.
        convs_per_block: convolutions per block.
        stem_stride: stride of the first convolution (1 or 2).

    Shape:
        ``(B, in_channels, H, W)`` -> ``(B, num_classes)``.

    The returned ``nn.Sequential`` carries an ``architecture`` string (e.g. ``"small_vgg(width=32,
    convs_per_block=2)"``) that logs and reports print instead of the class name.
    """
    if min(int(in_channels), int(num_classes), int(width), int(convs_per_block), int(stem_stride)) < 1:
        raise ValueError("in_channels, num_classes, width, convs_per_block and stem_stride must be positive integers.")
    layers: list[tuple[str, nn.Module]] = []
    c_in = int(in_channels)
    for b in range(4):
        c_out = int(width) * 2**b
        body: list[nn.Module] = []
        for k in range(int(convs_per_block)):
            stride = int(stem_stride) if b == 0 and k == 0 else 1
            body += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            c_in = c_out
        layers.append((f"block{b + 1}", nn.Sequential(*body)))
        if b < 3:
            layers.append((f"pool{b + 1}", nn.MaxPool2d(2)))
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten(1)), ("fc", nn.Linear(c_in, int(num_classes)))]
    net = nn.Sequential(OrderedDict(layers))
    net.architecture = f"small_vgg(width={int(width)}, convs_per_block={int(convs_per_block)})"  # for logs and reports
    return net


def architecture_name(model: nn.Module) -> str:
    """A readable name of a classifier's architecture for logs and reports: its ``architecture`` attribute (set by
    :func:`small_vgg`) or its class name."""
    return str(getattr(model, "architecture", type(model).__name__))


def resnet18_classifier(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """torchvision ``resnet18(num_classes=...)`` (random initialisation) with its 7x7 stem taking ``in_channels``."""
    from monai.utils import optional_import

    models, has_tv = optional_import("torchvision.models")
    if not has_tv:
        raise ImportError("resnet18_classifier needs torchvision: pip install torchvision")
    net = models.resnet18(weights=None, num_classes=int(num_classes))
    if int(in_channels) != 3:
        net.conv1 = nn.Conv2d(int(in_channels), 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


#: built-in architecture names of :func:`build_classifier`
CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "small_vgg": small_vgg, "resnet18": resnet18_classifier, "efficientnet_lite": efficientnet_lite,
}


def build_classifier(name: str, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """Build a classifier by name: a key of :data:`CLASSIFIERS` or ``"package.module:callable"``.

    Raises:
        ValueError: for an unknown name or a malformed import path.
    """
    if name in CLASSIFIERS:
        return CLASSIFIERS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    if ":" not in name:
        raise ValueError(f"unknown classifier {name!r}; use one of {sorted(CLASSIFIERS)} or 'package.module:callable'.")
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import classifier factory {name!r}: {e}") from e
    return fn(in_channels=in_channels, num_classes=num_classes, **kwargs)



def save_classifier(model: nn.Module, path: str | os.PathLike, arch: str, info: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> None:
    """Atomically save ``model``'s weights with the architecture needed to rebuild it (:func:`load_classifier`)."""
    from ...utils import atomic_torch_save

    atomic_torch_save({"format": _FORMAT, "arch": arch, "kwargs": dict(kwargs), "state_dict": model.state_dict(),
                       "info": json.dumps(dict(info or {}))}, path)


def load_classifier(path: str | os.PathLike, in_channels: int = 1, num_classes: int = 2,
                    map_location: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a classifier saved by :func:`save_classifier`; returns ``(model in eval mode, info)``.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: when the file is not such a checkpoint.
    """
    from ...utils import safe_torch_load

    ckpt = safe_torch_load(path, map_location=map_location)
    if not isinstance(ckpt, Mapping) or "arch" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"'{path}' is not a classifier checkpoint (save_classifier format).")
    kwargs = dict(ckpt.get("kwargs", {}))
    if kwargs.get("pretrained"):  # the weights come from the checkpoint: skip the pretrained initialisation
        kwargs["pretrained"] = False
    model = build_classifier(ckpt["arch"], in_channels=in_channels, num_classes=num_classes, **kwargs)
    model.load_state_dict(ckpt["state_dict"])
    info = json.loads(ckpt.get("info") or "{}")
    info.update(arch=ckpt["arch"], kwargs=dict(ckpt.get("kwargs", {})))
    return model.eval(), info
