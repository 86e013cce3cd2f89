# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Dictionary transform for the Cushion (``Cushiond`` with the MONAI aliases ``CushionD`` and ``CushionDict``)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms.transform import MapTransform

from ..networks.layers.cushion import CushionLayer
from ..transforms.array import Cushion

__all__ = ["Cushiond", "CushionD", "CushionDict"]


class Cushiond(MapTransform):
    """Dictionary-based wrapper of :class:`monai_aegis.transforms.Cushion`.

    Args:
        keys: keys of the images to cushion. See also: :py:class:`monai.transforms.compose.MapTransform`.
        cushion: a preset or method name (default ``"jpeg80"``), a ``CushionLayer`` or a callable.
        allow_missing_keys: don't raise an exception if a key is missing.
        kwargs: layer options overriding the preset (``quality``, ``bits``, ``tv_weight``, ...).
    """

    backend = Cushion.backend

    def __init__(
        self,
        keys: KeysCollection,
        cushion: str | CushionLayer | Callable = "jpeg80",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cushion = Cushion(cushion, **kwargs)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cushion(d[key])
        return d


CushionD = CushionDict = Cushiond
