# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Mahalanobis-distance detector (MAHA) of Lee et al., "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018.

Per hooked layer, class-conditional Gaussians with a **tied** covariance are fitted to the (average-pooled)
clean training features: class means ``mu_c`` and the covariance of the class-centred features (Lee et al.
fit ``sklearn.covariance.EmpiricalCovariance`` to ``x - mu_y``; a Ledoit-Wolf shrunk estimate is offered for
layers with more channels than samples). The layer score is the **squared** Mahalanobis distance
``(x - mu_c)^T Sigma^+ (x - mu_c)`` to the closest class mean (Lee et al.'s confidence score with the sign
flipped, so that higher = more adversarial), or to the mean of the predicted class with
``class_assignment="predicted"``. Per-layer scores are averaged over layers (Medical Aegis); Lee et al.
instead weight layers with a logistic regression, and their input pre-processing (a gradient step on the
input) is not part of this feature-space detector.

``Sigma^+`` is the pseudo-inverse (eigenvalues below ``D * eps * max_eigenvalue`` dropped, as
``scipy.linalg.pinvh`` in ``EmpiricalCovariance.precision_``), applied as a whitening matrix so scoring is one
matrix product per layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from monai.utils import look_up_option

from .base import FeatureDetector, Features

__all__ = ["MahalanobisDetector", "class_conditional_gaussian", "ledoit_wolf_covariance", "whitening_matrix"]


def ledoit_wolf_covariance(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Ledoit-Wolf shrunk covariance of ``x`` ``(N, D)`` (centred by its mean), as ``sklearn.covariance.LedoitWolf``.

    Returns:
        ``(covariance (D, D), shrinkage)``; ``covariance = (1 - s) * S + s * trace(S) / D * I`` with ``S`` the
        empirical (1/N) covariance.
    """
    n, p = x.shape
    xc = x - x.mean(0)
    emp = xc.T @ xc / n
    if p == 1:
        return emp, 0.0
    mu = torch.trace(emp) / p
    delta_ = (emp * emp).sum()
    beta_ = (xc.pow(2).sum(1) ** 2).sum()
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - p * mu * mu) / p
    beta = torch.minimum(beta, delta)
    shrinkage = 0.0 if float(beta) == 0.0 else float(beta / delta)
    cov = (1.0 - shrinkage) * emp
    cov.diagonal().add_(shrinkage * mu)
    return cov, shrinkage


def class_conditional_gaussian(
    x: torch.Tensor, labels: torch.Tensor, num_classes: int, covariance: str = "empirical"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and tied covariance of features ``x`` ``(N, D)`` with class ``labels`` ``(N,)``.

    The covariance is that of the class-centred features ``x - mu_y`` (re-centred by their mean, like
    ``EmpiricalCovariance(assume_centered=False)``), normalised by ``N``.

    Args:
        x: features.
        labels: class indices in ``[0, num_classes)``; every class needs at least one sample.
        num_classes: number of classes.
        covariance: ``"empirical"`` (maximum likelihood) or ``"ledoit_wolf"`` (shrunk).

    Returns:
        ``(means (C, D), covariance (D, D))`` in ``x``'s dtype.

    Raises:
        ValueError: if a class has no sample.
    """
    covariance = look_up_option(covariance, ("empirical", "ledoit_wolf"))
    counts = torch.bincount(labels, minlength=num_classes)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"classes {empty} have no training samples; every class in [0, {num_classes}) needs some.")
    means = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    means /= counts.unsqueeze(1).to(x.dtype)
    xc = x - means[labels]
    if covariance == "ledoit_wolf":
        return means, ledoit_wolf_covariance(xc)[0]
    xc = xc - xc.mean(0)
    return means, xc.T @ xc / x.shape[0]


def whitening_matrix(cov: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    """``W`` ``(D, r)`` with ``W W^T = pinv(cov)`` for a symmetric PSD ``cov``, so ``|x W|^2 = x^T cov^+ x``.

    Eigenvalues ``<= rtol * max_eigenvalue`` are dropped (default ``rtol = D * eps``, scipy's ``pinvh``).
    """
    evals, evecs = torch.linalg.eigh(cov)
    if rtol is None:
        rtol = cov.shape[0] * torch.finfo(cov.dtype).eps
    keep = evals > rtol * evals.abs().max()
    return evecs[:, keep] * evals[keep].rsqrt()


class MahalanobisDetector(FeatureDetector):
    """Class-conditional Gaussian (tied covariance) detector of Lee et al. (2018); see the module docstring.

    Example::

        det = MahalanobisDetector().fit(pool_features(train_feats), train_labels)
        scores = det.score(test_feats)                  # (N,), higher = more adversarial

    Args:
        covariance: ``"empirical"`` (Lee et al.) or ``"ledoit_wolf"`` (shrinkage; better when channels are
            comparable to or exceed the number of training samples).
        class_assignment: ``"min"``: distance to the closest class mean (Lee et al.; ``pred_labels`` ignored);
            ``"predicted"``: distance to the mean of ``pred_labels`` (then required).
        reduction: ``"mean"`` (global average pooling, Lee et al.) or ``"flatten"``.

    Fitted statistics are computed in float64 and stored per layer: whitening matrix ``W`` ``(D, r)``, whitened
    class means ``(C, r)`` and the feature mean used for centring.
    """

    name = "maha"

    def __init__(self, covariance: str = "empirical", class_assignment: str = "min", reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.covariance = look_up_option(covariance, ("empirical", "ledoit_wolf"))
        self.class_assignment = look_up_option(class_assignment, ("min", "predicted"))

    @property
    def needs_pred_labels(self) -> bool:  # type: ignore[override]
        return self.class_assignment == "predicted"

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "covariance": self.covariance, "class_assignment": self.class_assignment}

    def fit(self, features: Features, labels: torch.Tensor, num_classes: int | None = None) -> MahalanobisDetector:
        """Fit class means and the tied covariance per layer.

        Args:
            features: clean training features ``layer -> (N, C, *spatial) or (N, D)``.
            labels: ``(N,)`` true classes.
            num_classes: number of classes (default ``labels.max() + 1``); each needs a sample.

        Raises:
            ValueError: bad features, wrong label count, or a class without samples.
        """
        with self._fit_scope(features) as feats:
            n = self._num_samples(feats)
            y = self._check_fit_labels(labels, n, num_classes)
            self._num_classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
            for layer, f in feats.items():
                x = f.to(torch.float64)
                y_dev = y.to(x.device)
                center = x.mean(0)
                means, cov = class_conditional_gaussian(x - center, y_dev, self._num_classes, self.covariance)
                w = whitening_matrix(cov)
                self._tensors[layer] = {"center": center, "whiten": w, "means": means @ w}
        return self

    def _score_layers(
        self, features: OrderedDict[str, torch.Tensor], pred_labels: torch.Tensor | None
    ) -> OrderedDict[str, torch.Tensor]:
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for layer, f in features.items():
            z = (f - self._get(layer, "center", f)) @ self._get(layer, "whiten", f)
            means = self._get(layer, "means", f)
            if pred_labels is not None and self.class_assignment == "predicted":
                out[layer] = (z - means[pred_labels]).pow(2).sum(1)
            else:
                # loop over the (few) classes: (N, r) work per class, no (N, C, r) intermediate
                d2 = torch.stack([(z - m).pow(2).sum(1) for m in means], 1)
                out[layer] = d2.min(1).values
        return out
