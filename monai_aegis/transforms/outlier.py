# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Synthetic out-of-distribution images: what a screening Shield must reject although no attacker made it.

A Shield trained only against adversarial perturbations of clean studies has never seen an input that is not a
study at all, and may accept it (measured on the chest X-ray bundle: smooth random blobs, inverted images and fundus
photographs were accepted as clean chest X-rays). :class:`RandOutlier` turns clean images into such inputs -- noise,
smooth blobs, intensity-inverted or pixel- / patch-shuffled copies, near-constant frames -- so that the Shield's
training can add them to its negatives (``ShieldTrainer(outliers=...)``, the bundles' ``shield_outliers``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, look_up_option
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor
from torch.nn import functional as F

from ..utils import check_image_batch

__all__ = ["OUTLIER_KINDS", "RandOutlier", "RandOutlierd", "RandOutlierD", "RandOutlierDict"]

#: the kinds of outlier :class:`RandOutlier` draws from
OUTLIER_KINDS = ("uniform", "gaussian", "blobs", "inverted", "pixel_shuffle", "patch_shuffle", "constant")


class RandOutlier(RandomizableTransform):
    """Replace each image of a batch (or one channel-first image) by an out-of-distribution image of a kind drawn
    uniformly from ``kinds``:

    - ``uniform``: uniform noise in ``[0, 1]``;
    - ``gaussian``: Gaussian noise of a mean in ``[0.2, 0.8]`` and a standard deviation in ``[0.05, 0.3]``;
    - ``blobs``: smooth random shapes (a 2x2 to 8x8 random grid upsampled bicubically);
    - ``inverted``: ``1 - x`` (a negative of the image);
    - ``pixel_shuffle``: the image's pixels in a random order (same histogram, no anatomy);
    - ``patch_shuffle``: its ``patch`` x ``patch`` tiles in a random order;
    - ``constant``: one grey level plus faint noise (standard deviation 0.01).

    Args:
        kinds: the kinds to draw from (default all of :data:`OUTLIER_KINDS`).
        patch: tile size of ``patch_shuffle``.

    Raises:
        ValueError: an unknown kind, a ``patch`` below 2, or an image that is not ``(C, H, W)`` /
            ``(B, C, H, W)`` float in ``[0, 1]``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, kinds: Sequence[str] | None = None, patch: int = 8) -> None:
        super().__init__(1.0)
        kinds = OUTLIER_KINDS if kinds is None else tuple(kinds)
        if not kinds:
            raise ValueError("RandOutlier needs at least one kind.")
        self.kinds = tuple(look_up_option(k, OUTLIER_KINDS) for k in kinds)
        if int(patch) < 2:
            raise ValueError(f"patch must be >= 2, got {patch}.")
        self.patch = int(patch)
        self._kind: np.ndarray = np.zeros(0, dtype=np.int64)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the kinds of ``data`` images (an int, default 1) and the seed of their content."""
        n = 1 if data is None else int(data)
        self._kind = self.R.randint(0, len(self.kinds), size=n)
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """
        Args:
            img: ``(C, H, W)`` or a batch ``(B, C, H, W)``, float in ``[0, 1]``.
            randomize: draw new kinds (``False`` reuses the last draw, for a batch of the same size).
        """
        x = convert_to_tensor(img, track_meta=False)
        if x.ndim not in (3, 4):
            raise ValueError(f"RandOutlier expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}.")
        single = x.ndim == 3
        xb = (x[None] if single else x).detach().float()
        check_image_batch(xb, name="img", spatial_dims=(2, 3), value_range=(0.0, 1.0))
        if randomize:
            self.randomize(xb.shape[0])
        elif len(self._kind) != xb.shape[0]:
            raise ValueError("randomize=False needs a previous draw for a batch of the same size.")
        out = self._apply(xb)
        out = out[0] if single else out
        result, *_ = convert_to_dst_type(out.to(x.dtype), dst=img)
        return result

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        gen = torch.Generator().manual_seed(self._seed)
        out = x.clone()
        kind = np.asarray([self.kinds[i] for i in self._kind])

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen).to(x)

        for name in np.unique(kind).tolist():
            sel = torch.as_tensor(kind == name, device=x.device)
            k = int(sel.sum())
            if name == "uniform":
                out[sel] = rand(k, c, h, w)
            elif name == "gaussian":
                mean, std = 0.2 + 0.6 * rand(k, 1, 1, 1), 0.05 + 0.25 * rand(k, 1, 1, 1)
                out[sel] = (mean + std * torch.randn(k, c, h, w, generator=gen).to(x)).clamp(0, 1)
            elif name == "blobs":
                g = int(torch.randint(2, 9, (1,), generator=gen))
                out[sel] = F.interpolate(rand(k, c, g, g), size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
            elif name == "inverted":
                out[sel] = 1.0 - x[sel]
            elif name == "pixel_shuffle":
                perm = torch.argsort(rand(k, h * w), dim=1).to(x.device)
                flat = x[sel].flatten(2)
                out[sel] = flat.gather(2, perm[:, None].expand(-1, c, -1)).view(k, c, h, w)
            elif name == "patch_shuffle":
                out[sel] = self._patch_shuffle(x[sel], gen)
            else:  # constant
                level = rand(k, 1, 1, 1)
                out[sel] = (level + 0.01 * torch.randn(k, c, h, w, generator=gen).to(x)).clamp(0, 1)
        return out

    def _patch_shuffle(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        k, c, h, w = x.shape
        p = self.patch
        ph, pw = h // p, w // p
        if ph * pw < 2:  # too small to tile: shuffle pixels instead
            perm = torch.randperm(h * w, generator=gen).to(x.device)
            return x.flatten(2)[..., perm].view_as(x)
        core = x[..., : ph * p, : pw * p]
        tiles = core.reshape(k, c, ph, p, pw, p).permute(0, 2, 4, 1, 3, 5).reshape(k, ph * pw, c, p, p)
        order = torch.argsort(torch.rand(k, ph * pw, generator=gen), dim=1).to(x.device)
        tiles = tiles.gather(1, order.view(k, -1, 1, 1, 1).expand_as(tiles))
        out = x.clone()
        out[..., : ph * p, : pw * p] = tiles.reshape(k, ph, pw, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(
            k, c, ph * p, pw * p)
        return out


class RandOutlierd(RandomizableTransform, MapTransform):
    """Dictionary-based wrapper of :class:`RandOutlier`; every key of one item gets the same draw.

    Args:
        keys: keys of the images to replace.
        allow_missing_keys: don't raise an exception if a key is missing.
        kwargs: the options of :class:`RandOutlier`.
    """

    backend = RandOutlier.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.outlier = RandOutlier(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandOutlierd:
        super().set_random_state(seed, state)
        self.outlier.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            d[key] = self.outlier(d[key], randomize=first)
            first = False
        return d


RandOutlierD = RandOutlierDict = RandOutlierd
