# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Preprocessing for the classifiers: any supported file -> ``(C, H, W)`` float tensor in [0, 1].

:func:`classification_transforms` is the standard pipeline; :class:`ScaleIntensityByDtype` and
:class:`ConvertChannels` (with their dictionary versions) are the two steps MONAI does not ship.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandAffined,
    RandFlipd,
    Resized,
    ScaleIntensity,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    Transform,
)
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

__all__ = [
    "ConvertChannels",
    "ConvertChannelsD",
    "ConvertChannelsDict",
    "ConvertChannelsd",
    "ScaleIntensityByDtype",
    "ScaleIntensityByDtypeD",
    "ScaleIntensityByDtypeDict",
    "ScaleIntensityByDtyped",
    "classification_augmentation",
    "classification_transforms",
]

# ITU-R BT.601 luma weights, as Pillow's ``convert("L")``.
_LUMA = (0.299, 0.587, 0.114)
# Resize modes whose output is a convex combination of the input (no overshoot outside [0, 1]).
_CONVEX_MODES = ("area", "nearest", "nearest-exact", "bilinear", "linear", "trilinear")


class ScaleIntensityByDtype(Transform):
    """Scale an image to [0, 1] according to how it was stored.

    * ``uint8`` (8-bit PNG/JPEG/DICOM): fixed range, ``x / 255`` (absolute intensities are kept, which the
      Cushion's bit-depth reduction relies on).
    * ``bool``: ``0``/``1``.
    * any other integer type (16-bit DICOM, 12-bit in ``uint16``, 16-bit PNG, ``int16`` NIfTI): by the image's
      actual range, ``(x - min) / (max - min)`` (a constant image becomes 0).
    * floating point: kept when already inside [0, 1], else scaled by its actual range like the integers.

    The dtype decides, so load with ``LoadImage(dtype=None)`` (as :func:`classification_transforms` does);
    an 8-bit image already cast to float32 is scaled by its range instead of by 255.

    Args:
        dtype: output floating point dtype.

    Shape:
        any; the output has the input's shape.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self._fixed = ScaleIntensityRange(0.0, 255.0, 0.0, 1.0, clip=True, dtype=None)
        self._range = ScaleIntensity(minv=0.0, maxv=1.0, dtype=None)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return ``img`` scaled to [0, 1] as ``self.dtype`` (numpy in, numpy out)."""
        t = convert_to_tensor(img, track_meta=get_track_meta())
        if t.dtype == torch.uint8:
            out = self._fixed(t.to(self.dtype))
        elif t.dtype == torch.bool:
            out = t.to(self.dtype)
        else:
            out = t.to(self.dtype)
            if t.is_floating_point() and out.numel():
                lo, hi = torch.aminmax(out)
                if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
                    raise ValueError("image contains NaN or Inf values; cannot scale it to [0, 1].")
                if float(lo) >= 0.0 and float(hi) <= 1.0:
                    return convert_to_dst_type(out, dst=img, dtype=self.dtype)[0]
            out = self._range(out)
        return convert_to_dst_type(out, dst=img, dtype=self.dtype)[0]


class ScaleIntensityByDtyped(MapTransform):
    """Dictionary version of :class:`ScaleIntensityByDtype`.

    Args:
        keys: keys of the images to scale.
        dtype: output floating point dtype.
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = ScaleIntensityByDtype.backend

    def __init__(self, keys: KeysCollection, dtype: torch.dtype = torch.float32, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityByDtype(dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


class ConvertChannels(Transform):
    """Bring a channel-first image to ``channels`` channels and ``spatial_dims`` spatial dimensions.

    Channels: RGB/RGBA -> gray by ITU-R BT.601 luma (as Pillow's ``convert("L")``); gray+alpha -> gray; gray ->
    RGB by repetition; RGBA -> RGB drops alpha. Spatial: trailing singleton spatial axes (a 2-D DICOM or NIfTI
    read as ``(1, W, H, 1)``) are squeezed until ``spatial_dims`` remain.

    Args:
        channels: 1 (grayscale) or 3 (RGB).
        spatial_dims: spatial dimensions wanted (``None`` leaves them alone).

    Shape:
        input ``(C, *spatial)``; output ``(channels, *spatial')``. The output is floating point when channels
        are mixed (gray from RGB), else it keeps the input dtype.

    Raises:
        ValueError: an image with a channel count that cannot be converted, or more than ``spatial_dims``
            non-singleton spatial axes (e.g. a 3-D volume fed to a 2-D classifier).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, channels: int = 1, spatial_dims: int | None = 2) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
        if spatial_dims is not None and spatial_dims < 1:
            raise ValueError(f"spatial_dims must be >= 1 or None, got {spatial_dims!r}.")
        self.channels = channels
        self.spatial_dims = spatial_dims

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return ``img`` with ``self.channels`` channels (numpy in, numpy out)."""
        t = convert_to_tensor(img, track_meta=get_track_meta())
        if t.ndim < 2:
            raise ValueError(f"expected a channel-first image (C, *spatial), got shape {tuple(t.shape)}.")
        if self.spatial_dims is not None:
            while t.ndim - 1 > self.spatial_dims and t.shape[-1] == 1:
                t = t[..., 0]
            if t.ndim - 1 != self.spatial_dims:
                raise ValueError(
                    f"expected a {self.spatial_dims}-D image (C, {', '.join('HWD'[:self.spatial_dims])}), got shape "
                    f"{tuple(t.shape)}; pick a slice or use a {t.ndim - 1}-D pipeline."
                )
        c = t.shape[0]
        if c == self.channels:
            out = t
        elif self.channels == 1 and c in (3, 4):
            w = torch.tensor(_LUMA, dtype=torch.float32 if not t.is_floating_point() else t.dtype, device=t.device)
            out = torch.tensordot(w, t[:3].to(w.dtype), dims=1).unsqueeze(0)
        elif self.channels == 1 and c == 2:  # gray + alpha
            out = t[:1]
        elif self.channels == 3 and c in (1, 2):
            out = t[:1].repeat(3, *([1] * (t.ndim - 1)))
        elif self.channels == 3 and c == 4:  # RGBA
            out = t[:3]
        else:
            raise ValueError(f"cannot convert an image with {c} channels (shape {tuple(t.shape)}) to {self.channels}.")
        return convert_to_dst_type(out, dst=img, dtype=out.dtype)[0]


class ConvertChannelsd(MapTransform):
    """Dictionary version of :class:`ConvertChannels`.

    Args:
        keys: keys of the images to convert.
        channels: 1 (grayscale) or 3 (RGB).
        spatial_dims: spatial dimensions wanted (``None`` leaves them alone).
        allow_missing_keys: do not raise when a key is missing.
    """

    backend = ConvertChannels.backend

    def __init__(
        self, keys: KeysCollection, channels: int = 1, spatial_dims: int | None = 2, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ConvertChannels(channels, spatial_dims)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


ScaleIntensityByDtypeD = ScaleIntensityByDtypeDict = ScaleIntensityByDtyped
ConvertChannelsD = ConvertChannelsDict = ConvertChannelsd


def classification_transforms(
    spatial_size: int | Sequence[int] = 64,
    channels: int = 1,
    keys: KeysCollection = ("image",),
    *,
    load: bool = True,
    reader: Any = None,
    mode: str = "area",
    track_meta: bool = False,
) -> Compose:
    """The standard preprocessing of the classifiers: image file (or array) -> float tensor in [0, 1].

    ``LoadImaged(dtype=None, ensure_channel_first=True)`` -> :class:`ScaleIntensityByDtyped` (uint8 / 255,
    16-bit and float by the image's actual range) -> :class:`ConvertChannelsd` (to ``channels``; RGB->gray
    or gray->RGB; 2-D) -> ``Resized(spatial_size, mode)`` (aspect ratio not kept) -> ``EnsureTyped``.

    Args:
        spatial_size: output size, an int for square images or ``(H, W)``.
        channels: 1 (grayscale) or 3 (RGB, e.g. for ImageNet backbones).
        keys: the image key(s).
        load: include ``LoadImaged``. Use ``load=False`` for in-memory channel-first arrays such as
            :func:`medmnist_datalist` items (uint8 arrays are scaled by 255).
        reader: ``reader`` of ``LoadImaged`` (``None``: MONAI picks by file extension).
        mode: interpolation of ``Resized``; modes that can overshoot (``bicubic``) get a final clip to [0, 1].
        track_meta: return ``MetaTensor`` with the image metadata; ``False`` (default) returns plain
            ``torch.Tensor``, which is faster inside attack loops.

    Returns:
        a ``Compose`` mapping ``{"image": path, ...}`` to ``{"image": float32 (channels, *spatial_size), ...}``.

    Shape:
        output image: ``(channels, H, W)`` with values in [0, 1].

    Example::

        from monai.data import DataLoader, Dataset
        items = kermany_datalist("/data/chest_xray", "train")
        ds = Dataset(items, classification_transforms(spatial_size=224, channels=3))
        batch = next(iter(DataLoader(ds, batch_size=8)))  # batch["image"]: (8, 3, 224, 224) in [0, 1]
    """
    size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(spatial_size)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"spatial_size must be a positive int or (H, W) of positive ints, got {spatial_size!r}.")
    size = tuple(int(s) for s in size)
    steps: list[Any] = []
    if load:
        steps.append(LoadImaged(keys, reader=reader, dtype=None, ensure_channel_first=True, image_only=True))
    steps += [
        ScaleIntensityByDtyped(keys),
        ConvertChannelsd(keys, channels=channels, spatial_dims=2),
        Resized(keys, spatial_size=size, mode=mode),
    ]
    if mode not in _CONVEX_MODES:
        steps.append(ScaleIntensityRanged(keys, 0.0, 1.0, 0.0, 1.0, clip=True))
    steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=track_meta))
    return Compose(steps)


def classification_augmentation(
    keys: KeysCollection = ("image",), shift: int = 4, flip_prob: float = 0.5, shift_prob: float = 0.5,
    seed: int | None = None, rotate: float = 0.0, vertical_flip_prob: float = 0.0,
) -> Compose:
    """The classifiers' training augmentation, as the ``aegis_cxr`` bundle's ``classifier_train#preprocessing``
    lists it: a left-right flip (``RandFlipd``, axis 1 of a channel-first ``(C, W, H)`` image as MONAI loads it) and
    a translation by up to ``shift`` pixels with reflection padding (``RandAffined``), each with its probability.
    Images without a canonical orientation (fundus photographs) also take an up-down flip and a rotation.

    Args:
        keys: the image key(s).
        shift: largest translation in pixels, per axis (0: no translation).
        flip_prob, shift_prob: probabilities of the flip and of the translation.
        seed: seeds the transforms' random state (``set_random_state``); ``None`` leaves MONAI's default.
        rotate: largest rotation in degrees, either way, applied with the translation (0: none).
        vertical_flip_prob: probability of an up-down flip (0: none; a chest X-ray has an up and a down).

    Returns:
        a ``Compose`` for preprocessed ``{"image": (C, H, W) tensor in [0, 1]}`` items (append it after
        :func:`classification_transforms`).
    """
    if float(rotate) < 0 or not 0.0 <= float(vertical_flip_prob) <= 1.0:
        raise ValueError(f"rotate must be >= 0 degrees and vertical_flip_prob in [0, 1], got {rotate}, "
                         f"{vertical_flip_prob}.")
    steps: list[Any] = [RandFlipd(keys, prob=float(flip_prob), spatial_axis=1)]
    if float(vertical_flip_prob) > 0:
        steps.append(RandFlipd(keys, prob=float(vertical_flip_prob), spatial_axis=0))
    if int(shift) > 0 or float(rotate) > 0:
        rotation = {"rotate_range": math.radians(float(rotate))} if float(rotate) > 0 else {}
        steps.append(RandAffined(keys, prob=float(shift_prob), translate_range=(int(shift), int(shift)),
                                 padding_mode="reflection", **rotation))
    out = Compose(steps)
    if seed is not None:
        out.set_random_state(int(seed))
    return out
