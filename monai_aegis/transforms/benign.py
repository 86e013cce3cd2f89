# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Benign acquisition shifts: random re-compression, resampling, aspect change, gamma and noise.

A clean study from another scanner or export pipeline differs from the training images in exactly these ways
(the official Kermany test split, for example, was squashed to 224 x 224 and JPEG-coded, while the training split
was centre-cropped). A Shield that has only seen one pipeline's clean images rejects the other's; training its
positives (and the sources of its negatives) under :class:`RandBenignShift` teaches it that such changes are clean.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import TransformBackends
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor
from torch.nn import functional as F

from ..networks.layers.cushion import jpeg_compress
from ..utils import check_image_batch

__all__ = ["RandBenignShift", "RandBenignShiftd", "RandBenignShiftD", "RandBenignShiftDict"]


def _range(value: Sequence[float], name: str, low: float, high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must be (lo, hi) with {low} <= lo <= hi <= {high}, got {tuple(value)}.")
    return lo, hi


class RandBenignShift(RandomizableTransform):
    """Randomly apply benign acquisition shifts to a channel-first image or a batch of them.

    With probability ``prob`` per image, each of these is applied with its own probability ``p_each`` and a
    parameter drawn uniformly from its range, in this order:

    - **aspect / zoom** (``scale``): an anisotropic rescaling about the centre by ``(s_y, s_x)`` drawn from
      ``scale`` each (``s < 1`` zooms out with border padding, like a squashed export; ``s > 1`` crops);
    - **resampling** (``resample``): down-sampling by a factor in ``resample`` and back (bilinear, antialiased);
    - **gamma** (``gamma``): ``x ** g``;
    - **noise** (``noise_std``): additive Gaussian noise of a standard deviation drawn from ``noise_std``;
    - **JPEG** (``jpeg_quality``): re-compression with real libjpeg at an integer quality drawn from the range,
      always last (what an export pipeline does last), then the result is in ``[0, 1]`` on the 8-bit grid.

    A batch ``(B, C, H, W)`` is transformed image by image with independent draws, in one vectorised pass per
    component. Not differentiable, and not meant to be: it is a data augmentation of clean images.

    Args:
        prob: probability that an image is shifted at all.
        p_each: probability of each component for a shifted image.
        scale: range of the per-axis zoom factors.
        resample: range of the down-sampling factor (``1`` = none).
        gamma: range of the gamma exponent.
        noise_std: range of the noise standard deviation (intensities in ``[0, 1]``).
        jpeg_quality: range of the JPEG quality.

    Raises:
        ValueError: for ranges out of bounds, or an image that is not ``(C, H, W)`` / ``(B, C, H, W)`` float in
            ``[0, 1]``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        prob: float = 0.8,
        p_each: float = 0.5,
        scale: Sequence[float] = (0.8, 1.1),
        resample: Sequence[float] = (0.4, 1.0),
        gamma: Sequence[float] = (0.8, 1.25),
        noise_std: Sequence[float] = (0.0, 0.02),
        jpeg_quality: Sequence[float] = (50, 95),
    ) -> None:
        super().__init__(prob)
        if not 0.0 <= float(p_each) <= 1.0:
            raise ValueError(f"p_each must lie in [0, 1], got {p_each}.")
        self.p_each = float(p_each)
        self.scale = _range(scale, "scale", 0.1, 10.0)
        self.resample = _range(resample, "resample", 0.05, 1.0)
        self.gamma = _range(gamma, "gamma", 0.1, 10.0)
        self.noise_std = _range(noise_std, "noise_std", 0.0, 1.0)
        q_lo, q_hi = _range(jpeg_quality, "jpeg_quality", 1, 100)
        self.jpeg_quality = (int(round(q_lo)), int(round(q_hi)))
        self._params: dict[str, np.ndarray] = {}

    def randomize(self, data: Any = None) -> None:
        """Draw the parameters of ``data`` images (an int, default 1)."""
        n = 1 if data is None else int(data)
        r = self.R
        shifted = r.rand(n) < self.prob
        self._do_transform = bool(shifted.any())

        def on() -> np.ndarray:
            return shifted & (r.rand(n) < self.p_each)

        self._params = {
            "scale_on": on(), "scale": r.uniform(*self.scale, size=(n, 2)),
            "resample_on": on(), "resample": r.uniform(*self.resample, size=n),
            "gamma_on": on(), "gamma": r.uniform(*self.gamma, size=n),
            "noise_on": on(), "noise": r.uniform(*self.noise_std, size=n),
            "jpeg_on": on(), "jpeg": r.randint(self.jpeg_quality[0], self.jpeg_quality[1] + 1, size=n),
            "noise_seed": np.asarray(r.randint(0, 2**31 - 1)),
        }

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: ``(C, H, W)`` or a batch ``(B, C, H, W)``, float in ``[0, 1]``.
            randomize: draw new parameters (``False`` reuses the last draw, for a batch of the same size).
        """
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim not in (3, 4):
            raise ValueError(f"RandBenignShift expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}.")
        single = x.ndim == 3
        xb = (x[None] if single else x).detach()
        check_image_batch(xb, name="img", spatial_dims=(2, 3), value_range=(0.0, 1.0))
        if randomize:
            self.randomize(xb.shape[0])
        elif not self._params or len(self._params["gamma"]) != xb.shape[0]:
            raise ValueError("randomize=False needs a previous draw for a batch of the same size.")
        if not self._do_transform:
            return img
        out = self._apply(xb.float().clone())  # never write into the caller's tensor
        out = out[0] if single else out
        result, *_ = convert_to_dst_type(out.to(x.dtype), dst=img)
        return result

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        p = self._params
        dev = x.device
        b, _, h, w = x.shape

        def mask(key: str) -> torch.Tensor:
            return torch.as_tensor(p[key], device=dev)

        on = mask("scale_on")
        if on.any():
            s = torch.as_tensor(p["scale"], dtype=x.dtype, device=dev)
            theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=dev)
            theta[:, 0, 0], theta[:, 1, 1] = 1.0 / s[:, 1], 1.0 / s[:, 0]  # output -> input sampling grid
            grid = F.affine_grid(theta[on], [int(on.sum()), x.shape[1], h, w], align_corners=False)
            x[on] = F.grid_sample(x[on], grid, mode="bilinear", padding_mode="border", align_corners=False)
        on = mask("resample_on")
        for i in torch.nonzero(on).flatten().tolist():  # one size per image: a loop over the (few) shifted ones
            f = float(p["resample"][i])
            size = (max(2, round(h * f)), max(2, round(w * f)))
            small = F.interpolate(x[i : i + 1], size=size, mode="bilinear", antialias=True, align_corners=False)
            x[i : i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        x = x.clamp(0.0, 1.0)
        on = mask("gamma_on")
        if on.any():
            g = torch.where(on, torch.as_tensor(p["gamma"], dtype=x.dtype, device=dev), torch.ones((), dtype=x.dtype, device=dev))
            x = x.clamp_min(1e-6).pow(g.view(-1, 1, 1, 1)) * (x > 0)
        on = mask("noise_on")
        if on.any():
            std = torch.as_tensor(p["noise"], dtype=x.dtype, device=dev) * on
            gen = torch.Generator(device="cpu").manual_seed(int(p["noise_seed"]))
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(dev)
            x = (x + std.view(-1, 1, 1, 1) * noise).clamp(0.0, 1.0)
        on = mask("jpeg_on")
        for q in np.unique(p["jpeg"][p["jpeg_on"]]).tolist():  # one codec call per distinct quality
            sel = torch.as_tensor(p["jpeg_on"] & (p["jpeg"] == q), device=dev)
            x[sel] = jpeg_compress(x[sel], int(q))
        return x


class RandBenignShiftd(RandomizableTransform, MapTransform):
    """Dictionary-based wrapper of :class:`RandBenignShift`; every key of one item gets the same draw.

    Args:
        keys: keys of the images to shift.
        allow_missing_keys: don't raise an exception if a key is missing.
        kwargs: the options of :class:`RandBenignShift`.
    """

    backend = RandBenignShift.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.shifter = RandBenignShift(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandBenignShiftd:
        super().set_random_state(seed, state)
        self.shifter.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            d[key] = self.shifter(d[key], randomize=first)
            first = False
        return d


RandBenignShiftD = RandBenignShiftDict = RandBenignShiftd
