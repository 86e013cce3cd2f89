# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Threat models: the set of allowed adversarial inputs around a clean batch.

A threat model owns everything about *where* the attacker may go: the norm ball (``eps``), the valid
intensity range (``clip``, not hard-coded to ``[0, 1]``) and an optional pixel mask (perturb only where the
mask is 1). The attack loop asks it for a random start, for the projection after each step, and for the
per-sample perturbation norms of the result.

Norms are per sample over all non-batch dimensions, so ``(B, C, H, W)`` and ``(B, C, D, H, W)`` batches with
any channel count are treated alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..utils import check_positive

__all__ = [
    "ThreatModel",
    "LinfBall",
    "L2Ball",
    "linf_norm",
    "l2_norm",
    "unit_l2",
    "make_threat",
    "check_mask",
    "broadcast_mask",
]


def linf_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per-sample L-inf norm over all non-batch dimensions, shape ``(B,)``."""
    return delta.flatten(1).abs().amax(dim=1)


def l2_norm(delta: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm over all non-batch dimensions, shape ``(B,)``."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=2, dim=1)


def unit_l2(grad: torch.Tensor, tiny: float = 1e-10) -> torch.Tensor:
    """``grad / (||grad||_2 + tiny)`` per sample (the L2 steepest-ascent direction)."""
    return grad / _per_sample(l2_norm(grad) + tiny, grad.ndim)


def _per_sample(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a ``(B,)`` tensor to broadcast against a ``(B, ...)`` tensor of rank ``ndim``."""
    return v.reshape(-1, *([1] * (ndim - 1)))


def check_mask(mask: torch.Tensor) -> torch.Tensor:
    """Return ``mask`` as a bool tensor, or raise ``ValueError`` if it holds values other than 0 and 1."""
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be binary (0 = keep the pixel, 1 = may perturb it).")
        mask = mask != 0
    return mask


def broadcast_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` checked (:func:`check_mask`), on ``x``'s device and expanded to ``x``'s shape; ``None`` stays
    ``None``. Leading dimensions may be omitted (an ``(H, W)`` mask applies to every sample and channel).

    Raises:
        ValueError: when the mask is not binary or does not broadcast to ``x``.
    """
    if mask is None:
        return None
    mask = check_mask(mask).to(x.device)
    if mask.ndim < x.ndim:
        mask = mask.reshape(*([1] * (x.ndim - mask.ndim)), *mask.shape)
    try:
        return mask.expand_as(x)
    except RuntimeError as e:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the input of shape {tuple(x.shape)}."
        ) from e


class ThreatModel:
    """Base class of the norm balls. Subclasses implement :meth:`project` and :meth:`random_init`.

    Args:
        eps: radius of the ball (> 0), in the units of the image intensities.
        clip: ``(low, high)`` valid intensity range; adversarial inputs are clipped to it.
        mask: optional binary tensor broadcastable to the input batch (e.g. ``(1, 1, H, W)``, ``(B, 1, H, W)``
            or ``(B, C, *spatial)``); the perturbation is zero wherever the mask is 0. It can also be given per
            call (``attack(x, y, mask=...)``), which overrides this one.

    Raises:
        ValueError: for ``eps <= 0``, a ``clip`` that is not an increasing pair, or a non-binary mask.
    """

    norm: str = ""

    def __init__(
        self,
        eps: float,
        clip: Sequence[float] | None = (0.0, 1.0),
        mask: torch.Tensor | None = None,
    ) -> None:
        self.eps = check_positive(eps, "eps")
        if clip is None:
            clip = (float("-inf"), float("inf"))
        if len(clip) != 2 or not float(clip[0]) < float(clip[1]):
            raise ValueError(f"clip must be an increasing (low, high) pair, got {clip!r}.")
        self.clip = (float(clip[0]), float(clip[1]))
        self.mask = check_mask(mask) if mask is not None else None

    def __repr__(self) -> str:
        mask = "" if self.mask is None else f", mask={tuple(self.mask.shape)}"
        return f"{type(self).__name__}(eps={self.eps:g}, clip={self.clip}{mask})"

    # ----------------------------------------------------------------------------------------------------------
    def resolve_mask(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The mask to use for batch ``x`` (the call's, else the threat model's), see :func:`broadcast_mask`."""
        return broadcast_mask(x, self.mask if mask is None else mask)

    def clip_to_range(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.clip
        return x.clamp(lo if lo > float("-inf") else None, hi if hi < float("inf") else None)

    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of ``delta`` in this threat model's norm."""
        raise NotImplementedError

    def bounds(self, x0: torch.Tensor, mask: torch.Tensor | None) -> object:
        """Per-attack constants reused by every :meth:`project` call (e.g. the element-wise box for L-inf)."""
        return None

    def project(
        self, x0: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None, bounds: object = None
    ) -> torch.Tensor:
        """Project ``x`` onto the ball around ``x0`` intersected with the clip range (and the mask)."""
        raise NotImplementedError

    def random_init(
        self, x0: torch.Tensor, mask: torch.Tensor | None, bounds: object = None, surface: bool = False
    ) -> torch.Tensor:
        """A random point of the feasible set around ``x0`` (uses the global torch RNG).

        Args:
            surface: draw on the surface of the ball (APGD's start) instead of inside it.
        """
        raise NotImplementedError

    def normalize_step(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit norm for this ball (sign for L-inf, unit L2 for L2)."""
        raise NotImplementedError


class LinfBall(ThreatModel):
    """L-inf ball ``||x - x0||_inf <= eps`` intersected with the clip range.

    The projection is one ``clamp`` against an element-wise box precomputed once per attack. The box is nudged
    by one ulp where floating point rounding of ``x0 +/- eps`` would overshoot, so that
    ``(x_adv - x0).abs().max() <= eps`` holds *exactly* in the input dtype.

    Shape:
        - x0, x: ``(B, C, *spatial)``.
    """

    norm = "Linf"

    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        return linf_norm(delta)

    def bounds(self, x0: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.tensor(self.eps, dtype=x0.dtype, device=x0.device)
        if float(eps) > self.eps:  # the dtype rounded eps up (0.1 in float32): use the float just below
            eps = torch.nextafter(eps, torch.zeros_like(eps))
        lo, hi = x0 - eps, x0 + eps
        # make (bound - x0) <= eps exact in this dtype: step one ulp inwards where rounding overshot
        for _ in range(2):
            lo = torch.where(x0 - lo > eps, torch.nextafter(lo, x0), lo)
            hi = torch.where(hi - x0 > eps, torch.nextafter(hi, x0), hi)
        c_lo, c_hi = self.clip
        if c_lo > float("-inf"):
            lo = lo.clamp_min(c_lo)
        if c_hi < float("inf"):
            hi = hi.clamp_max(c_hi)
        if mask is not None:
            lo = torch.where(mask, lo, x0)
            hi = torch.where(mask, hi, x0)
        return lo, hi

    def project(
        self, x0: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None, bounds: object = None
    ) -> torch.Tensor:
        lo, hi = bounds if bounds is not None else self.bounds(x0, mask)  # type: ignore[misc]
        return torch.clamp(x, lo, hi)

    def random_init(
        self, x0: torch.Tensor, mask: torch.Tensor | None, bounds: object = None, surface: bool = False
    ) -> torch.Tensor:
        # drawn in the logical (contiguous) order, so a seed gives the same start whatever x0's memory layout
        t = torch.empty(x0.shape, dtype=x0.dtype, device=x0.device).uniform_(-self.eps, self.eps)
        if surface:  # scale so that the largest coordinate sits on the boundary
            t = t * (self.eps / linf_norm(t).clamp_min(1e-12)).reshape(-1, *([1] * (x0.ndim - 1)))
        return self.project(x0, x0 + t, mask, bounds)

    def normalize_step(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()


class L2Ball(ThreatModel):
    """L2 ball ``||x - x0||_2 <= eps`` (per sample, over all non-batch dims) intersected with the clip range.

    The projection rescales the (masked) perturbation onto the ball and then clips to the intensity range;
    clipping moves every coordinate towards ``x0`` (which lies in the range), so it never leaves the ball.

    Shape:
        - x0, x: ``(B, C, *spatial)``.
    """

    norm = "L2"

    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        return l2_norm(delta)

    def project(
        self, x0: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None, bounds: object = None
    ) -> torch.Tensor:
        delta = x - x0
        if mask is not None:
            delta = delta * mask
        n = l2_norm(delta)
        factor = torch.clamp(self.eps / n.clamp_min(1e-12), max=1.0)
        return self.clip_to_range(x0 + delta * _per_sample(factor, x0.ndim))

    def random_init(
        self, x0: torch.Tensor, mask: torch.Tensor | None, bounds: object = None, surface: bool = False
    ) -> torch.Tensor:
        d = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device)  # logical order, see LinfBall
        if mask is not None:
            d = d * mask
        n = l2_norm(d).clamp_min(1e-12)
        r = torch.ones_like(n) if surface else torch.rand_like(n)  # radius U(0, 1) * eps, as torchattacks
        return self.project(x0, x0 + d * _per_sample(r * self.eps / n, x0.ndim), mask)

    def normalize_step(self, grad: torch.Tensor) -> torch.Tensor:
        return unit_l2(grad)


_NORMS = {"linf": LinfBall, "inf": LinfBall, "l2": L2Ball, "2": L2Ball}


def make_threat(
    norm: str, eps: float, clip: Sequence[float] | None = (0.0, 1.0), mask: torch.Tensor | None = None
) -> ThreatModel:
    """Build a threat model from a norm name (``"Linf"`` or ``"L2"``, case-insensitive).

    Raises:
        ValueError: for an unknown norm.
    """
    key = str(norm).lower().replace("_", "").replace("-", "")
    if key not in _NORMS:
        raise ValueError(f"unknown norm {norm!r}; supported: 'Linf', 'L2'.")
    return _NORMS[key](eps, clip=clip, mask=mask)
