# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The Cushion, tier 1 of Medical Aegis: input transforms that round (JPEG, bit depth) or smooth (TVM) away part of
a small change.

One batched implementation serves both faces of the cushion. The functionals (:func:`jpeg_compress`,
:func:`reduce_bit_depth`, :func:`tv_minimize`) and their ``nn.Module`` twin :class:`CushionLayer` work on
``(B, C, *spatial)`` float tensors in ``[0, 1]``; :class:`CushionLayer` goes *inside* a model for training
and attack evaluation, and the MONAI transforms ``monai_aegis.transforms.Cushion``/``Cushiond`` are thin
wrappers for data pipelines.

Each functional has its own module -- ``jpeg`` (libjpeg codec, threads, kornia proxy), ``bit_depth``, ``tv``
(Chambolle) and ``bpda`` -- and is re-exported here; this module holds the layer, the presets and the factories.

JPEG and bit-depth reduction are piecewise constant, so an adaptive attacker differentiates through them with
BPDA (Athalye et al., 2018): :func:`bpda` returns the true cushion value and back-propagates the gradient of a
proxy (the identity by default, or a smooth surrogate: the unrolled Chambolle iterations for TVM, kornia's
differentiable JPEG when kornia is installed, or any callable).

References:
    Yao, He, Zhou, "Medical Aegis: Robust adversarial protectors for medical images".
    Guo et al., "Countering adversarial images using input transformations", ICLR 2018.
    Xu et al., "Feature squeezing", NDSS 2018.
    Chambolle, "An algorithm for total variation minimization and applications", JMIV 2004.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.utils import look_up_option
from torch import nn

from ...utils import check_positive
from .bit_depth import reduce_bit_depth
from .bpda import ProxyType, bpda
from .cushion_checks import _check_input, _check_int, _check_slice_dim
from .jpeg import _KorniaJpegProxy, jpeg_compress
from .tv import _DEFAULT_TV_EPS, _DEFAULT_TV_MAX_ITER, _DEFAULT_TV_WEIGHT, tv_minimize

__all__ = [
    "CUSHION_METHODS",
    "CUSHION_PRESETS",
    "CushionLayer",
    "bpda",
    "cushion_from_config",
    "cushion_from_name",
    "resolve_cushion",
    "jpeg_compress",
    "reduce_bit_depth",
    "tv_minimize",
]

#: Built-in cushion methods accepted by :class:`CushionLayer` (a callable is accepted too).
CUSHION_METHODS: tuple[str, ...] = ("jpeg", "bit_depth", "tvm", "identity")

#: Named configurations for the paper's ablation (JPEG 90/80/70, bit depth dropping 3 or 4 of 8 bits, TVM).
#: ``bit_depth5`` keeps 5 bits (drops 3), ``bit_depth4`` keeps 4 bits (drops 4).
CUSHION_PRESETS: dict[str, dict[str, Any]] = {
    "identity": {"method": "identity"},
    "jpeg90": {"method": "jpeg", "quality": 90},
    "jpeg80": {"method": "jpeg", "quality": 80},
    "jpeg70": {"method": "jpeg", "quality": 70},
    "bit_depth5": {"method": "bit_depth", "bits": 5},
    "bit_depth4": {"method": "bit_depth", "bits": 4},
    "tvm": {"method": "tvm"},
}


# ---------------------------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------------------------


class CushionLayer(nn.Module):
    """The cushion as an ``nn.Module``: true transform in the forward pass, BPDA proxy in the backward pass.

    Put it first inside the protected model (``nn.Sequential(CushionLayer("jpeg"), classifier)``) so that
    training and in-engine attacks both see it; an attacker's gradient flows through the proxy.

    Args:
        method: ``"jpeg"``, ``"bit_depth"``, ``"tvm"``, ``"identity"`` or a callable
            ``(B, C, *spatial) -> same shape`` (its value is computed without autograd and BPDA applies).
        quality: JPEG quality in ``[1, 100]`` (``method="jpeg"``).
        bits: bits kept out of 8 (``method="bit_depth"``); 5 drops 3 bits, 4 drops 4.
        tv_weight: TVM denoising weight (``method="tvm"``).
        tv_eps: TVM stopping tolerance.
        tv_max_iter: TVM maximal iterations.
        proxy: gradient proxy. ``"identity"`` (default; straight-through BPDA), ``"smooth"`` (the method's smooth
            surrogate: the unrolled Chambolle iterations for TVM, whose value is the cushion itself; kornia's
            differentiable JPEG for JPEG, needs ``kornia``; none exists for bit depth), or a callable.
        name: display name; defaults to a preset-style name such as ``"jpeg80"`` or ``"bit_depth5"``.
        num_workers: JPEG codec threads (default ``torch.get_num_threads()``).
        slice_dim: JPEG on 3-D volumes: the dim cut into 2-D slices (default -1, MONAI's ``(B, C, H, W, D)``).

    Raises:
        ValueError: for an unknown method/proxy or out-of-range parameters.
        ImportError: for ``proxy="smooth"`` with JPEG when kornia is not installed.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`, float in ``[0, 1]``.
        - Output: same as input.
    """

    def __init__(
        self,
        method: str | Callable[[torch.Tensor], torch.Tensor] = "jpeg",
        quality: int = 80,
        bits: int = 5,
        tv_weight: float = _DEFAULT_TV_WEIGHT,
        tv_eps: float = _DEFAULT_TV_EPS,
        tv_max_iter: int = _DEFAULT_TV_MAX_ITER,
        proxy: ProxyType = "identity",
        name: str | None = None,
        num_workers: int | None = None,
        slice_dim: int = -1,
    ) -> None:
        super().__init__()
        if callable(method):
            self.method: str = "callable"
            self._fn: Callable[[torch.Tensor], torch.Tensor] = method
            default_name = getattr(method, "__name__", type(method).__name__)
        else:
            self.method = look_up_option(method, CUSHION_METHODS)
            if self.method == "jpeg":
                self.quality = _check_int(quality, "quality", 1, 100)
                self.slice_dim = _check_slice_dim(slice_dim)
                self._fn = functools.partial(
                    jpeg_compress, quality=self.quality, slice_dim=self.slice_dim, num_workers=num_workers
                )
                default_name = f"jpeg{self.quality}"
            elif self.method == "bit_depth":
                self.bits = _check_int(bits, "bits", 1, 8)
                self._fn = functools.partial(reduce_bit_depth, bits=self.bits)
                default_name = f"bit_depth{self.bits}"
            elif self.method == "tvm":
                self.tv_weight = check_positive(tv_weight, "tv_weight")
                self.tv_eps = check_positive(tv_eps, "tv_eps", allow_zero=True)
                self.tv_max_iter = _check_int(tv_max_iter, "tv_max_iter", 1, 1_000_000)
                self._fn = functools.partial(
                    tv_minimize, weight=self.tv_weight, eps=self.tv_eps, max_iter=self.tv_max_iter
                )
                default_name = "tvm" if self.tv_weight == _DEFAULT_TV_WEIGHT else f"tvm{self.tv_weight:g}"
            else:
                self._fn = _identity
                default_name = "identity"
        self.name: str = default_name if name is None else str(name)
        self.proxy_name, self._proxy, self._unrolled = self._resolve_proxy(proxy)

    def _resolve_proxy(self, proxy: ProxyType) -> tuple[str, Callable | None, bool]:
        """Return ``(display name, proxy callable or None for identity, True to differentiate the value itself)``."""
        if callable(proxy):
            return getattr(proxy, "__name__", type(proxy).__name__), proxy, False
        if proxy is None:
            return "identity", None, False
        mode = look_up_option(proxy, ("identity", "smooth"))
        if mode == "identity" or self.method == "identity":
            return "identity", None, False
        if self.method == "tvm":
            return "smooth", None, True
        if self.method == "jpeg":
            return "smooth", _KorniaJpegProxy(self.quality, self.slice_dim), False
        raise ValueError(
            f"No smooth surrogate exists for cushion method {self.method!r}; use proxy='identity' or a callable."
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the cushioned batch; gradients with respect to ``x`` follow the proxy."""
        if self.method == "identity":
            _check_input(x)
            return x
        if self.method == "callable":
            _check_input(x)
        if self._unrolled or not (torch.is_grad_enabled() and x.requires_grad):
            return self._fn(x)
        return bpda(x, self._fn, self._proxy)

    def get_config(self) -> dict[str, Any]:
        """Plain-Python constructor arguments that rebuild this cushion with :func:`cushion_from_config`.

        Raises:
            ValueError: for a user callable method or proxy (code cannot be stored as configuration).
        """
        if self.method == "callable" or self.proxy_name not in ("identity", "smooth"):
            raise ValueError(
                f"cushion {self.name!r} uses a user callable (method or proxy) and cannot be stored as a config; "
                "save it separately."
            )
        config: dict[str, Any] = {"method": self.method, "proxy": self.proxy_name, "name": self.name}
        if self.method == "jpeg":
            config.update(quality=self.quality, slice_dim=self.slice_dim)
        elif self.method == "bit_depth":
            config["bits"] = self.bits
        elif self.method == "tvm":
            config.update(tv_weight=self.tv_weight, tv_eps=self.tv_eps, tv_max_iter=self.tv_max_iter)
        return config

    def extra_repr(self) -> str:
        parts = [f"name={self.name!r}", f"method={self.method!r}"]
        if self.method == "jpeg":
            parts.append(f"quality={self.quality}")
        elif self.method == "bit_depth":
            parts.append(f"bits={self.bits}")
        elif self.method == "tvm":
            parts += [f"tv_weight={self.tv_weight:g}", f"tv_eps={self.tv_eps:g}", f"tv_max_iter={self.tv_max_iter}"]
        if self.method != "identity":
            parts.append(f"proxy={self.proxy_name!r}")
        return ", ".join(parts)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def cushion_from_config(config: Mapping[str, Any]) -> CushionLayer:
    """Rebuild a :class:`CushionLayer` from :meth:`CushionLayer.get_config` output."""
    if not isinstance(config, Mapping) or "method" not in config:
        raise ValueError(f"a cushion config must be a mapping with a 'method' key, got {config!r}.")
    return CushionLayer(**dict(config))


def cushion_from_name(name: str, **overrides: Any) -> CushionLayer:
    """Build a :class:`CushionLayer` from a preset name (``"jpeg80"``, ``"bit_depth4"``, ``"tvm"``, ...) or a
    method name (``"jpeg"`` with its defaults); keyword ``overrides`` replace preset values (e.g. ``proxy``).

    Raises:
        ValueError: for an unknown name (the message lists the options).
    """
    options = {**{m: {"method": m} for m in CUSHION_METHODS}, **CUSHION_PRESETS}
    config = dict(look_up_option(str(name).lower(), options))
    config.update(overrides)
    return CushionLayer(**config)


def resolve_cushion(cushion: str | nn.Module | Callable[[torch.Tensor], torch.Tensor] | None,
                    **kwargs: Any) -> nn.Module | None:
    """The one conversion of a Cushion setting into a layer, used wherever a Cushion is given by the user.

    Args:
        cushion: ``None`` or ``"none"`` (no Cushion); a preset or method name (``"jpeg80"``, ``"tvm"``, ``"jpeg"``,
            ... -- :func:`cushion_from_name`); an ``nn.Module`` (a :class:`CushionLayer`, or any module with the
            same contract: ``(B, C, *spatial)`` in ``[0, 1]`` -> same), returned as is; or another callable, wrapped
            in ``CushionLayer(method=callable)``.
        kwargs: layer options (``quality``, ``proxy``, ...), with a name or a callable only.

    Raises:
        ValueError: for an unknown name, options with a module or ``None``, or another type.
    """
    if cushion is None or (isinstance(cushion, str) and cushion.lower() == "none"):
        if kwargs:
            raise ValueError(f"Options {sorted(kwargs)} given without a Cushion.")
        return None
    if isinstance(cushion, str):
        return cushion_from_name(cushion, **kwargs)
    if isinstance(cushion, nn.Module):
        if kwargs:
            raise ValueError(f"Options {sorted(kwargs)} cannot be applied to an existing {type(cushion).__name__}.")
        return cushion
    if callable(cushion):
        return CushionLayer(method=cushion, **kwargs)
    raise ValueError(f"cushion must be None, a preset name, a module or a callable, got {type(cushion).__name__}.")
