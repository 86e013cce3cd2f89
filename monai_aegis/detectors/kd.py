# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Kernel-density detector (KD) of Feinman et al., "Detecting Adversarial Samples from Artifacts", 2017.

Per hooked layer, a Gaussian kernel density estimate is built from the (average-pooled) clean training
features of each class. A test sample is scored under the density of its **predicted** class; adversarial
examples pushed across a decision boundary land far from the training manifold of the class they are assigned
to, so their density is low. Layer score = ``-log p(x | predicted class)`` (higher = more adversarial),
identical to ``-sklearn.neighbors.KernelDensity(kernel="gaussian", bandwidth=h).fit(X_c).score_samples(x)``:

    log p(x) = logsumexp_i(-|x - x_i|^2 / (2 h^2)) - log(n_c) - D/2 * log(2 pi h^2)

Per-layer scores are averaged over layers (Medical Aegis). Feinman et al. also combine KD with Bayesian
uncertainty in a logistic regression; that part is not included here.

**Bandwidth.** Feinman et al. used ``h = 1.20`` (MNIST), ``0.26`` (CIFAR-10) and ``1.00`` (SVHN) on the last
hidden layer; the default here is ``1.0``. Because the scale of pooled features differs between layers and
backbones, ``bandwidth`` also accepts a mapping ``layer -> h``, or ``"median"`` for the median heuristic
(``h`` = median nearest-neighbour distance between training samples of the same class, per layer, set at fit).

Scoring is batched: one ``|x|^2 + |y|^2 - 2 x y^T`` matrix product and a ``logsumexp`` per class and chunk
of queries, on whatever device the features live.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Union

import torch

from ..utils import check_positive
from .base import FeatureDetector, Features, _chunks, pairwise_sq_dists

__all__ = ["KernelDensityDetector", "gaussian_kde_log_density"]

Bandwidth = Union[float, str, Mapping[str, float]]


def gaussian_kde_log_density(
    x: torch.Tensor, reference: torch.Tensor, bandwidth: float, chunk_size: int = 1024
) -> torch.Tensor:
    """Log density of ``x`` ``(N, D)`` under a Gaussian KDE on ``reference`` ``(M, D)`` with bandwidth ``h``.

    Same value as ``KernelDensity(kernel="gaussian", bandwidth=h).fit(reference).score_samples(x)``.

    Args:
        x: query points.
        reference: kernel centres.
        bandwidth: kernel standard deviation ``h > 0``.
        chunk_size: queries per block (bounds memory to ``chunk_size x M`` distances).

    Returns:
        ``(N,)`` log densities in ``x``'s dtype.
    """
    h = check_positive(bandwidth, "bandwidth")
    center = reference.mean(0)  # centring reduces cancellation in the matrix-product distances
    ref = reference - center
    return _kde_log_density_centered(x - center, ref, (ref * ref).sum(1), h, chunk_size)


def _kde_log_density_centered(
    x: torch.Tensor, ref: torch.Tensor, ref_sq: torch.Tensor, h: float, chunk_size: int
) -> torch.Tensor:
    """KDE log density with ``x`` and ``ref`` already centred and ``ref_sq = |ref|^2`` precomputed.

    ``-|x - r|^2 / (2 h^2) = (x . r) / h^2 - |x|^2 / (2 h^2) - |r|^2 / (2 h^2)``: the scaling is folded into one
    ``addmm`` so the ``(chunk, M)`` block is touched only by the product, one add and the ``logsumexp``.
    """
    m, d = ref.shape
    inv = 1.0 / (h * h)
    const = math.log(m) + 0.5 * d * math.log(2.0 * math.pi * h * h)
    ref_term = (ref_sq * (-0.5 * inv)).unsqueeze(0)
    out = x.new_empty(x.shape[0])
    for sl in _chunks(x.shape[0], chunk_size):
        xq = x[sl]
        logk = torch.addmm((xq * xq).sum(1, keepdim=True), xq, ref.T, beta=-0.5 * inv, alpha=inv)
        out[sl] = torch.logsumexp(logk.add_(ref_term), dim=1) - const
    return out


class KernelDensityDetector(FeatureDetector):
    """Gaussian kernel density of the predicted class (Feinman et al., 2017); see the module docstring.

    Example::

        det = KernelDensityDetector(bandwidth=1.0).fit(train_feats, train_labels)
        scores = det.score(test_feats, pred_labels=logits.argmax(1))   # (N,), higher = more adversarial

    Args:
        bandwidth: kernel bandwidth ``h`` (float for every layer), a mapping ``layer -> h``, or ``"median"``.
        reduction: ``"mean"`` (global average pooling) or ``"flatten"``.
        chunk_size: query rows per distance block (memory ``chunk_size x n_class`` per block).

    Stored per layer: the training features sorted by class and centred per class, their squared norms, the
    class centres and counts; the bandwidths in ``bandwidths``.
    """

    name = "kd"
    needs_pred_labels = True

    def __init__(self, bandwidth: Bandwidth = 1.0, reduction: str = "mean", chunk_size: int = 1024) -> None:
        super().__init__(reduction)
        if isinstance(bandwidth, str):
            if bandwidth != "median":
                raise ValueError(
                    f"bandwidth must be a positive number, a mapping layer -> h or 'median', got {bandwidth!r}."
                )
        elif isinstance(bandwidth, Mapping):
            bandwidth = {str(k): check_positive(v, f"bandwidth[{k!r}]") for k, v in bandwidth.items()}
        else:
            bandwidth = check_positive(bandwidth, "bandwidth")
        self.bandwidth = bandwidth
        self.chunk_size = int(check_positive(chunk_size, "chunk_size"))

    def get_config(self) -> dict[str, Any]:
        bw = dict(self.bandwidth) if isinstance(self.bandwidth, Mapping) else self.bandwidth
        return {**super().get_config(), "bandwidth": bw, "chunk_size": self.chunk_size}

    @property
    def bandwidths(self) -> dict[str, float]:
        """The bandwidth used for each fitted layer."""
        return dict(self._extra.get("bandwidths", {}))

    def fit(self, features: Features, labels: torch.Tensor, num_classes: int | None = None) -> KernelDensityDetector:
        """Store the clean training features of every class, per layer.

        Args:
            features: clean training features ``layer -> (N, C, *spatial) or (N, D)``.
            labels: ``(N,)`` true classes.
            num_classes: number of classes (default ``labels.max() + 1``). A class without training samples
                cannot be scored (``score`` raises if it is predicted).

        Raises:
            ValueError: bad features, wrong label count, or a bandwidth mapping not covering the layers.
        """
        with self._fit_scope(features) as feats:
            n = self._num_samples(feats)
            y = self._check_fit_labels(labels, n, num_classes)
            self._num_classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
            if isinstance(self.bandwidth, Mapping):
                unknown = sorted(set(self.bandwidth) - set(feats))
                missing = [k for k in feats if k not in self.bandwidth]
                if unknown or missing:
                    raise ValueError(
                        f"bandwidth mapping must cover exactly the fitted layers; missing {missing}, unknown {unknown}."
                    )
            order = torch.argsort(y, stable=True)
            counts = torch.bincount(y, minlength=self._num_classes)
            bandwidths: dict[str, float] = {}
            for layer, f in feats.items():
                ref = f[order.to(f.device)]
                if self.bandwidth == "median":
                    h = _median_nn_distance(ref, counts, self.chunk_size)
                elif isinstance(self.bandwidth, Mapping):
                    h = self.bandwidth[layer]
                else:
                    h = float(self.bandwidth)
                bandwidths[layer] = h
                # per-class centring: precision of the matrix-product distances, and less work at scoring
                centers = torch.stack(
                    [r.mean(0) if r.shape[0] else r.new_zeros(r.shape[1]) for r in ref.split(counts.tolist())]
                )
                ref = ref - centers.repeat_interleave(counts.to(ref.device), 0)
                self._tensors[layer] = {
                    "reference": ref,
                    "reference_sq": (ref * ref).sum(1),
                    "centers": centers,
                    "counts": counts.clone(),
                }
            self._extra = {"bandwidths": bandwidths}
        return self

    def _score_layers(
        self, features: OrderedDict[str, torch.Tensor], pred_labels: torch.Tensor | None
    ) -> OrderedDict[str, torch.Tensor]:
        assert pred_labels is not None
        first = next(iter(self._tensors.values()))
        counts = first["counts"].tolist()
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        present = torch.unique(pred_labels).tolist()
        empty = [c for c in present if counts[c] == 0]
        if empty:
            raise ValueError(f"pred_labels contain classes {empty} that had no training samples at fit().")
        masks = {c: torch.nonzero(pred_labels == c).flatten() for c in present}
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for layer, f in features.items():
            ref = self._get(layer, "reference", f)
            ref_sq = self._get(layer, "reference_sq", f)
            centers = self._get(layer, "centers", f)
            h = self._extra["bandwidths"][layer]
            scores = f.new_empty(f.shape[0])
            for c, idx in masks.items():
                sl = slice(offsets[c], offsets[c + 1])
                x = f[idx] - centers[c]
                scores[idx] = -_kde_log_density_centered(x, ref[sl], ref_sq[sl], h, self.chunk_size)
            out[layer] = scores
        return out


def _median_nn_distance(ref: torch.Tensor, counts: torch.Tensor, chunk_size: int) -> float:
    """Median distance from each training sample to its nearest other sample of the same class."""
    nn: list[torch.Tensor] = []
    start = 0
    for c in counts.tolist():
        x = ref[start : start + c]
        start += c
        if c < 2:
            continue
        x = x - x.mean(0)
        for sl in _chunks(c, chunk_size):
            d2 = pairwise_sq_dists(x[sl], x)
            d2[torch.arange(d2.shape[0], device=x.device), torch.arange(sl.start, sl.stop, device=x.device)] = math.inf
            nn.append(d2.min(1).values.sqrt())
    if not nn:
        raise ValueError("bandwidth='median' needs a class with at least two training samples.")
    v = torch.cat(nn).sort().values
    h = float((v[(v.numel() - 1) // 2] + v[v.numel() // 2]) / 2)  # the usual median (mean of the middle two)
    if not h > 0:
        raise ValueError("bandwidth='median' found duplicate training features (median distance 0); set bandwidth.")
    return h
