# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Transferability helpers: input diversity (DIM) and translation-invariant gradient smoothing (TIM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..utils import check_positive

__all__ = ["InputDiversity", "GradientSmoothing", "gaussian_kernel1d"]


class InputDiversity:
    """DI-FGSM input diversity (Xie et al., CVPR 2019): with probability ``prob`` the whole batch is resized
    to a random size and zero-padded at a random offset; the model then sees the transformed batch.

    For a ``resize_rate`` below 1 the random size lies in ``[int(rate * S), S)`` and the batch is padded back to
    ``S``; above 1 it lies in ``[S, int(rate * S))`` and the batch is padded to ``int(rate * S)`` (the original
    DIM setting, the model must accept the larger size). The random size is drawn for the last spatial axis and
    scaled to the others (equal for square/cubic inputs), then one pad offset per spatial axis, then the coin;
    all from the global torch RNG in that order, which is the order of torchattacks' ``DIFGSM``, so with the
    same seed both apply the same transform to 2-D square inputs. Works for ``(B, C, H, W)`` (bilinear) and
    ``(B, C, D, H, W)`` (trilinear).

    Args:
        prob: probability of transforming a forward pass, in ``[0, 1]``.
        resize_rate: ratio between the smallest and the largest size (0.9 in torchattacks, 1.1 in DIM).
    """

    def __init__(self, prob: float = 0.5, resize_rate: float = 0.9) -> None:
        prob = float(prob)
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must lie in [0, 1], got {prob!r}.")
        self.prob = prob
        self.resize_rate = check_positive(resize_rate, "resize_rate")
        if self.resize_rate == 1.0:
            raise ValueError("resize_rate must differ from 1 (there would be no size to draw).")

    def __repr__(self) -> str:
        return f"InputDiversity(prob={self.prob:g}, resize_rate={self.resize_rate:g})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        if len(spatial) not in (2, 3):
            raise ValueError(f"InputDiversity needs (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}.")
        last = spatial[-1]
        scaled = int(last * self.resize_rate)
        low, high = (scaled, last) if self.resize_rate < 1 else (last, scaled)
        if high <= low:
            raise ValueError(f"resize_rate {self.resize_rate:g} gives no size range for spatial size {last}.")
        rnd = int(torch.randint(low=low, high=high, size=(1,), dtype=torch.int32))
        sizes = [max(1, round(rnd * s / last)) for s in spatial]
        outs = [max(s, int(s * self.resize_rate)) for s in spatial]
        before = []
        for size, out in zip(sizes, outs):
            rem = out - size
            before.append(int(torch.randint(low=0, high=rem, size=(1,), dtype=torch.int32)) if rem > 0 else 0)
        if not bool(torch.rand(1) < self.prob):
            return x
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        resized = F.interpolate(x, size=sizes, mode=mode, align_corners=False)
        pad: list[int] = []
        for b, size, out in reversed(list(zip(before, sizes, outs))):
            pad += [b, out - size - b]
        return F.pad(resized, pad, value=0.0)


def gaussian_kernel1d(kernel_size: int, nsig: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian sampled at ``kernel_size`` points evenly spread over ``[-nsig, nsig]`` standard
    deviations (the TI-FGSM kernel; its 2-D/3-D version is the outer product)."""
    t = torch.linspace(-nsig, nsig, kernel_size, dtype=torch.float64)
    k = torch.exp(-0.5 * t * t)
    return (k / k.sum()).to(dtype)


class GradientSmoothing:
    """TI-FGSM gradient smoothing (Dong et al., CVPR 2019): convolve the input gradient with a Gaussian kernel,
    depthwise (each channel on its own, any channel count), 2-D or 3-D, zero ``"same"`` padding.

    The kernel is separable, so it runs as one 1-D convolution per spatial axis (``3 k`` instead of ``k^3``
    taps in 3-D); this equals the full 2-D/3-D convolution of torchattacks' ``TIFGSM`` up to float rounding.

    Args:
        kernel_size: odd kernel length in pixels (15 in TI-FGSM for 299 px images; use less for small ones).
        nsig: the kernel spans ``[-nsig, nsig]`` standard deviations (3).
    """

    def __init__(self, kernel_size: int = 15, nsig: float = 3.0) -> None:
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.kernel_size = int(kernel_size)
        self.nsig = check_positive(nsig, "nsig")
        self._kernel = gaussian_kernel1d(self.kernel_size, self.nsig)

    def __repr__(self) -> str:
        return f"GradientSmoothing(kernel_size={self.kernel_size}, nsig={self.nsig:g})"

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        nd = grad.ndim - 2
        if nd not in (2, 3):
            raise ValueError(f"GradientSmoothing needs (B, C, H, W) or (B, C, D, H, W), got {tuple(grad.shape)}.")
        if self.kernel_size == 1:
            return grad
        c = grad.shape[1]
        conv = F.conv2d if nd == 2 else F.conv3d
        k = self._kernel.to(device=grad.device, dtype=grad.dtype)
        out = grad
        for axis in range(nd):
            shape = [1, 1] + [1] * nd
            shape[2 + axis] = self.kernel_size
            weight = k.reshape(shape).expand(c, *shape[1:]).contiguous()
            out = conv(out, weight, padding="same", groups=c)
        return out
