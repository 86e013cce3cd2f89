# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Per-class, per-layer Gaussian mixture model of clean pooled features (the HFC attack's feature prior).

Fitted with scikit-learn's ``GaussianMixture`` (optional dependency, ``pip install scikit-learn``) and then
converted to torch buffers, so distances and log-likelihoods are differentiable and run batched on the
input's device.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import
from torch import nn

from ..networks import hooked_batches, pool_features
from ..utils import check_labels

GaussianMixture, _has_sklearn = optional_import("sklearn.mixture", name="GaussianMixture")

__all__ = ["GaussianFeatureModel", "extract_pooled_features"]


def extract_pooled_features(
    model: nn.Module,
    x: torch.Tensor,
    layer_names: Sequence[str] | str,
    preprocess: nn.Module | None = None,
    batch_size: int = 64,
) -> OrderedDict[str, torch.Tensor]:
    """Global-average-pooled features ``{layer: (N, C)}`` of ``model`` on ``x``, in batches, without gradients.

    The model (and ``preprocess``) run in eval mode; their modes are restored afterwards.
    """
    modules = [m for m in (model, preprocess) if m is not None]
    modes = [(m, m.training) for mod in modules for m in mod.modules()]
    out: dict[str, list[torch.Tensor]] = {}
    try:
        for m in modules:
            m.eval()
        for _, feats in hooked_batches(model, x, layer_names, preprocess, batch_size):
            for n, f in pool_features(feats).items():
                out.setdefault(n, []).append(f)
    finally:
        for m, t in modes:
            m.training = t
    return OrderedDict((n, torch.cat(v)) for n, v in out.items())


class GaussianFeatureModel(nn.Module):
    """One Gaussian mixture per (class, layer) over pooled ``(B, D)`` features.

    Build it with :meth:`fit` (from features) or :meth:`fit_model` (from a classifier and clean images). It is an
    ``nn.Module`` holding the mixtures as buffers (``state_dict`` / ``.to(device)`` work; layer names and the
    covariance type travel as extra state).

    Args:
        layer_names: the layers modelled, in order.
        dims: feature width ``D`` of each layer.
        num_classes: number of classes ``Y``.
        n_components: components ``K`` per mixture.
        covariance_type: ``"full"``/``"tied"`` (stored as full precision Cholesky factors) or
            ``"diag"``/``"spherical"`` (stored as per-dimension precisions' square roots).

    Shape:
        - features: ``{layer: (B, D_l)}``; classes: ``(B,)``.
        - :meth:`log_likelihood`: ``(B,)``; :meth:`mahalanobis`: ``{layer: (B,)}``.
    """

    def __init__(
        self,
        layer_names: Sequence[str],
        dims: Sequence[int],
        num_classes: int,
        n_components: int = 1,
        covariance_type: str = "full",
    ) -> None:
        super().__init__()
        if covariance_type not in ("full", "tied", "diag", "spherical"):
            raise ValueError(f"covariance_type must be full, tied, diag or spherical, got {covariance_type!r}.")
        if len(layer_names) != len(dims) or not layer_names:
            raise ValueError("layer_names and dims must be non-empty and of equal length.")
        self.layer_names = tuple(layer_names)
        self.dims = tuple(int(d) for d in dims)
        self.num_classes = int(num_classes)
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        full = covariance_type in ("full", "tied")
        y, k = self.num_classes, self.n_components
        for i, d in enumerate(self.dims):
            self.register_buffer(f"means_{i}", torch.zeros(y, k, d))
            self.register_buffer(f"prec_chol_{i}", torch.zeros(y, k, d, d) if full else torch.ones(y, k, d))
            self.register_buffer(f"log_weights_{i}", torch.zeros(y, k))

    # ---------------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        features: Mapping[str, torch.Tensor],
        labels: torch.Tensor,
        n_components: int = 1,
        covariance_type: str = "full",
        reg_covar: float = 1e-4,
        max_iter: int = 100,
        random_state: int | None = 0,
        num_classes: int | None = None,
    ) -> GaussianFeatureModel:
        """Fit one ``sklearn.mixture.GaussianMixture`` per class and layer on pooled clean features.

        Args:
            features: ``{layer: (N, D)}`` pooled clean features (e.g. from :func:`extract_pooled_features`).
            labels: ``(N,)`` class of each sample.
            n_components, covariance_type, reg_covar, max_iter, random_state: passed to ``GaussianMixture``;
                raise ``reg_covar`` for wide layers with few samples.
            num_classes: defaults to ``labels.max() + 1``.

        Raises:
            ValueError: for mismatched shapes or a class with fewer samples than components.
            OptionalImportError: when scikit-learn is not installed.
        """
        if not _has_sklearn:
            raise ImportError("GaussianFeatureModel.fit needs scikit-learn: pip install scikit-learn")
        if not features:
            raise ValueError("features must hold at least one layer.")
        n = next(iter(features.values())).shape[0]
        labels = check_labels(labels, n, num_classes, name="labels").cpu()
        num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        for name, f in features.items():
            if f.ndim != 2 or f.shape[0] != n:
                raise ValueError(f"features[{name!r}] must be ({n}, D), got {tuple(f.shape)}.")
        counts = torch.bincount(labels, minlength=num_classes)
        if int(counts.min()) < n_components:
            raise ValueError(
                f"every class needs at least n_components={n_components} samples; counts per class: {counts.tolist()}."
            )
        model = cls(list(features), [f.shape[1] for f in features.values()], num_classes, n_components, covariance_type)
        for i, f in enumerate(features.values()):
            f64 = f.detach().cpu().double().numpy()
            for c in range(num_classes):
                gm = GaussianMixture(
                    n_components=n_components,
                    covariance_type=covariance_type,
                    reg_covar=reg_covar,
                    max_iter=max_iter,
                    random_state=random_state,
                ).fit(f64[(labels == c).numpy()])
                model._set(i, c, gm)
        return model

    @classmethod
    def fit_model(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        layer_names: Sequence[str] | str,
        preprocess: nn.Module | None = None,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> GaussianFeatureModel:
        """Extract pooled features of clean ``x`` from ``model`` (through ``preprocess``) and :meth:`fit`."""
        feats = extract_pooled_features(model, x, layer_names, preprocess, batch_size)
        return cls.fit(feats, y, **kwargs).to(device=x.device)

    def _set(self, i: int, c: int, gm: Any) -> None:
        d = self.dims[i]
        k = self.n_components
        p = np.asarray(gm.precisions_cholesky_)
        if self.covariance_type == "tied":
            p = np.broadcast_to(p, (k, d, d))
        elif self.covariance_type == "spherical":
            p = np.broadcast_to(p[:, None], (k, d))
        getattr(self, f"means_{i}")[c] = torch.as_tensor(gm.means_, dtype=torch.float32)
        getattr(self, f"prec_chol_{i}")[c] = torch.as_tensor(np.ascontiguousarray(p), dtype=torch.float32)
        getattr(self, f"log_weights_{i}")[c] = torch.as_tensor(np.log(gm.weights_), dtype=torch.float32)

    def get_extra_state(self) -> dict[str, Any]:
        return {"layer_names": list(self.layer_names), "covariance_type": self.covariance_type}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if list(state["layer_names"]) != list(self.layer_names) or state["covariance_type"] != self.covariance_type:
            raise ValueError(
                f"checkpoint models layers {state['layer_names']} ({state['covariance_type']}), this model "
                f"{list(self.layer_names)} ({self.covariance_type})."
            )

    # ------------------------------------------------------------------------------------------- evaluation
    def _component_distances(self, i: int, f: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of ``f`` (B, D) to every component of its class: ``(B, K)``.

        Computed against all ``Y * K`` components at once (``(B, Y*K, D)`` intermediates, never a per-sample
        copy of the ``(D, D)`` factors), then the sample's class is picked.
        """
        y, k, d = self.num_classes, self.n_components, self.dims[i]
        means = getattr(self, f"means_{i}").to(f.dtype).reshape(y * k, d)
        prec = getattr(self, f"prec_chol_{i}").to(f.dtype)
        if prec.ndim == 4:  # z = f @ P - mu @ P, as scikit-learn
            p = prec.reshape(y * k, d, d)
            z = torch.einsum("bd,nde->bne", f, p) - torch.einsum("nd,nde->ne", means, p)
        else:
            z = (f[:, None, :] - means) * prec.reshape(y * k, d)
        maha = z.pow(2).sum(-1).reshape(-1, y, k)
        return maha.gather(1, classes.reshape(-1, 1, 1).expand(-1, 1, k))[:, 0]

    def _log_det(self, i: int, classes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        prec = getattr(self, f"prec_chol_{i}").to(dtype)
        diag = prec.diagonal(dim1=-2, dim2=-1) if prec.ndim == 4 else prec
        return diag.log().sum(-1)[classes]

    def _check(self, features: Mapping[str, torch.Tensor], classes: torch.Tensor) -> None:
        for name, d in zip(self.layer_names, self.dims):
            if name not in features:
                raise ValueError(f"features lack layer {name!r} (the model covers {list(self.layer_names)}).")
            if features[name].ndim != 2 or features[name].shape[1] != d:
                raise ValueError(f"features[{name!r}] must be pooled (B, {d}), got {tuple(features[name].shape)}.")
        if classes.numel() and int(classes.max()) >= self.num_classes:
            raise ValueError(f"class {int(classes.max())} is not modelled ({self.num_classes} classes).")

    def mahalanobis(
        self, features: Mapping[str, torch.Tensor], classes: torch.Tensor
    ) -> OrderedDict[str, torch.Tensor]:
        """Per layer, the squared Mahalanobis distance to the nearest component of each sample's class."""
        self._check(features, classes)
        return OrderedDict(
            (name, self._component_distances(i, features[name], classes).amin(dim=1))
            for i, name in enumerate(self.layer_names)
        )

    def log_likelihood(self, features: Mapping[str, torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """``(B,)`` sum over layers of ``log p(f_l | class)`` under each class's mixture."""
        self._check(features, classes)
        total = None
        for i, name in enumerate(self.layer_names):
            f = features[name]
            maha = self._component_distances(i, f, classes)
            log_n = -0.5 * (maha + self.dims[i] * math.log(2 * math.pi)) + self._log_det(i, classes, f.dtype)
            log_w = getattr(self, f"log_weights_{i}").to(f.dtype)[classes]
            ll = torch.logsumexp(log_w + log_n, dim=1)
            total = ll if total is None else total + ll
        return total  # type: ignore[return-value]

    forward = log_likelihood

    def extra_repr(self) -> str:
        return (
            f"layers={list(self.layer_names)}, classes={self.num_classes}, components={self.n_components}, "
            f"covariance={self.covariance_type!r}"
        )
