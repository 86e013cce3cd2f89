# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Local intrinsic dimensionality detector (LID) of Ma et al., "Characterizing Adversarial Subspaces Using Local
Intrinsic Dimensionality", ICLR 2018.

**Estimator.** For a point ``x`` and a reference minibatch of clean samples, with ``r_1 <= ... <= r_k`` the
distances from ``x`` to its ``k`` nearest neighbours in that minibatch (the maximum-likelihood estimator of
Amsaleg et al.)::

    LID(x) = -( 1/k * sum_i log(r_i / r_k) )^-1

Adversarial regions have higher LID than the clean data manifold.

**Protocol (Ma et al.).** LIDs are always measured against minibatches of ``batch_size`` (default 100)
*clean* samples: a clean training sample against the other members of its minibatch (itself excluded); its
adversarial and noisy counterparts against that same clean minibatch. Ma et al. use each sample's own
minibatch only; here every query is measured against **all** reference minibatches and the estimates are
averaged (same expected value, lower variance, and no pairing of adversarial/noisy samples with the clean
ones needed). The clean training features (in a fixed shuffled order, so minibatches mix classes) are kept
as the reference set so test samples are scored the same way. ``k`` is clipped to ``batch_size - 1`` as in the
original code; Ma et al. tuned ``k`` in ``[10, 40]`` (default 20). The original code also drops the nearest
neighbour of adversarial queries (a self-distance shortcut); that is not reproduced.

**Scores.** The per-layer LIDs of clean + noisy (negatives) and adversarial (positives) training features train
a logistic regression (scikit-learn ``LogisticRegression`` on standardised LIDs; Ma et al. used
``LogisticRegressionCV`` on min-max scaled LIDs -- with one to a few standardised inputs the regularisation
strength ``C`` hardly matters, so a fixed ``C`` keeps fitting fast and free of version-dependent warnings):

- ``aggregation="mean"`` (default; Medical Aegis averages per-layer scores): one 1-D logistic regression per
  layer; score = mean over layers of the regressions' logits. Without ``adversarial`` at ``fit`` the score is the
  mean raw LID over layers (unsupervised).
- ``aggregation="logistic"`` (Ma et al.): one logistic regression on the vector of per-layer LIDs; score = its
  logit (``adversarial`` required).

Logits (log-odds of "adversarial") rank samples exactly like the probabilities but do not saturate.
:meth:`LIDDetector.score_layers` returns the raw per-layer LIDs. Fitting the regression needs scikit-learn;
scoring is pure torch.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from monai.utils import look_up_option, optional_import

from ..utils import check_positive
from .base import FeatureDetector, Features, _chunks, pairwise_sq_dists

__all__ = ["LIDDetector", "knn_distances", "lid_mle", "minibatch_lid"]


def lid_mle(distances: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood LID from sorted nearest-neighbour distances ``(..., k)`` (ascending) -> ``(...)``.

    ``-(mean_i log(r_i / r_k))^-1``. Zero distances (duplicates) are clamped to the smallest positive float,
    and all-equal distances give a large finite value instead of ``inf``.
    """
    tiny = torch.finfo(distances.dtype).tiny
    r = distances.clamp_min(tiny)
    mean_log = (torch.log(r) - torch.log(r[..., -1:])).mean(-1)
    return 1.0 / (-mean_log).clamp_min(torch.finfo(distances.dtype).eps)


def _knn_sq(x: torch.Tensor, ref: torch.Tensor, k: int, self_index: torch.Tensor | None) -> torch.Tensor:
    """Squared distances of ``x`` ``(n, D)`` to its ``k`` nearest rows in each of ``ref`` ``(b, B, D)`` ->
    ``(n, b, k)`` ascending. ``self_index[i] = j`` excludes flat reference row ``j`` for query ``i`` (-1: none)."""
    b, bs, d = ref.shape
    d2 = pairwise_sq_dists(x, ref.reshape(b * bs, d))
    if self_index is not None:
        rows = torch.nonzero(self_index >= 0).flatten()
        d2[rows, self_index[rows]] = math.inf
    return torch.topk(d2.view(-1, b, bs), k, dim=2, largest=False, sorted=True).values


def knn_distances(x: torch.Tensor, reference: torch.Tensor, k: int, exclude_self: bool = False) -> torch.Tensor:
    """Euclidean distances from each row of ``x`` ``(N, D)`` to its ``k`` nearest rows of ``reference`` ``(M, D)``.

    Same as ``sklearn.neighbors.NearestNeighbors(n_neighbors=k).fit(reference).kneighbors(x)[0]``. With
    ``exclude_self`` (``x`` is ``reference``), row ``i`` of ``reference`` is not a neighbour of query ``i``.

    Returns:
        ``(N, k)`` distances, ascending.
    """
    m = reference.shape[0]
    if not 1 <= k <= m - int(exclude_self):
        raise ValueError(f"k must lie in [1, {m - int(exclude_self)}] for {m} reference points, got {k}.")
    center = reference.mean(0)
    ref = (reference - center).unsqueeze(0)
    idx = torch.arange(x.shape[0], device=x.device) if exclude_self else None
    return _knn_sq(x - center, ref, k, idx)[:, 0].sqrt()


def minibatch_lid(
    x: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    batch_size: int = 100,
    self_index: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """LID of each row of ``x`` ``(N, D)`` against every minibatch of ``reference`` ``(M, D)``, averaged.

    ``reference`` is split into ``M // batch_size`` consecutive minibatches (a remainder is dropped; if
    ``M < batch_size`` it is one minibatch). For each minibatch, :func:`lid_mle` of the ``k`` nearest-neighbour
    distances; the result is the mean over minibatches.

    Args:
        x: queries.
        reference: clean reference features.
        k: neighbours per estimate; must be smaller than the minibatch size.
        batch_size: reference minibatch size (Ma et al.: 100).
        self_index: optional ``(N,)`` row of ``reference`` to exclude for each query (``-1``: none) -- the
            query's own position when ``x`` are reference samples.
        chunk_size: queries per block.

    Returns:
        ``(N,)`` LIDs in ``x``'s dtype.
    """
    m, d = reference.shape
    bs = min(int(batch_size), m)
    nb = m // bs
    k_max = bs - 1 if self_index is not None else bs
    if not 1 <= k <= k_max:
        raise ValueError(f"k must lie in [1, {k_max}] for reference minibatches of {bs}, got {k}.")
    center = reference.mean(0)
    ref = (reference[: nb * bs] - center).view(nb, bs, d)
    out = x.new_empty(x.shape[0])
    for sl in _chunks(x.shape[0], chunk_size):
        idx = None if self_index is None else self_index[sl]
        if idx is not None:
            idx = torch.where(idx < nb * bs, idx, torch.full_like(idx, -1))
        r = _knn_sq(x[sl] - center, ref, k, idx).sqrt()
        out[sl] = lid_mle(r).mean(1)
    return out


class LIDDetector(FeatureDetector):
    """Local intrinsic dimensionality of Ma et al. (2018) with a logistic-regression read-out.

    Example::

        det = LIDDetector(k=20).fit(clean_feats, adversarial=adv_feats, noisy=noisy_feats)
        scores = det.score(test_feats)                 # (N,), higher = more adversarial

    Args:
        k: nearest neighbours per LID estimate (Ma et al. tuned 10-40; default 20).
        batch_size: size of the clean reference minibatches (Ma et al.: 100).
        aggregation: ``"mean"`` (per-layer logistic regressions, logits averaged; Medical Aegis) or
            ``"logistic"`` (one regression over all layers' LIDs; Ma et al.). See the module docstring.
        reduction: ``"mean"`` (global average pooling) or ``"flatten"`` (Ma et al. flattened activations).
        C: inverse L2 regularisation strength of the logistic regression(s).
        chunk_size: query rows per distance block.

    Stored per layer: the clean reference features; globally: LID standardisation and regression weights.
    """

    name = "lid"

    def __init__(
        self,
        k: int = 20,
        batch_size: int = 100,
        aggregation: str = "mean",
        reduction: str = "mean",
        C: float = 1.0,
        chunk_size: int = 1024,
    ) -> None:
        super().__init__(reduction)
        self.k = int(check_positive(k, "k"))
        self.batch_size = int(check_positive(batch_size, "batch_size"))
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}.")
        self.aggregation = look_up_option(aggregation, ("mean", "logistic"))
        self.C = check_positive(C, "C")
        self.chunk_size = int(check_positive(chunk_size, "chunk_size"))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "k": self.k,
            "batch_size": self.batch_size,
            "aggregation": self.aggregation,
            "C": self.C,
            "chunk_size": self.chunk_size,
        }

    @property
    def supervised(self) -> bool:
        """Whether a logistic regression was fitted (``adversarial`` was given to ``fit``)."""
        return "coef" in self._tensors.get("", {})

    def _lids(self, feats: OrderedDict[str, torch.Tensor], self_index: torch.Tensor | None) -> torch.Tensor:
        """``(N, L)`` LIDs of reduced features against the stored reference minibatches."""
        cols = []
        for layer, f in feats.items():
            ref = self._get(layer, "reference", f)
            # the same k for every query: clean training queries (self excluded) see batch_size - 1 candidates
            k = min(self.k, min(self.batch_size, ref.shape[0]) - 1)
            idx = None if self_index is None else self_index.to(f.device)
            cols.append(minibatch_lid(f, ref, k, self.batch_size, idx, self.chunk_size))
        return torch.stack(cols, 1)

    def fit(
        self,
        features: Features,
        labels: torch.Tensor | None = None,
        adversarial: Features | None = None,
        noisy: Features | None = None,
    ) -> LIDDetector:
        """Store the clean reference features and, with ``adversarial``, fit the logistic regression.

        Args:
            features: clean training features ``layer -> (N, C, *spatial) or (N, D)``; ``N >= 3``.
            labels: unused (LID is not class-conditional); checked for length if given.
            adversarial: adversarial features with the same layers (positives). Required for
                ``aggregation="logistic"``.
            noisy: features of noisy (non-adversarial) inputs with the same layers (extra negatives, Ma et al.).

        Raises:
            ValueError: bad or mismatched features, too few samples, or ``noisy`` without ``adversarial``.
            OptionalImportError: if scikit-learn is missing and a regression must be fitted.
        """
        with self._fit_scope(features) as feats:
            n = self._num_samples(feats)
            if labels is not None:
                self._check_fit_labels(labels, n, None)
            if n < 3:
                raise ValueError(f"LID needs at least 3 clean samples (k >= 1 neighbour besides itself), got {n}.")
            if adversarial is None and (noisy is not None or self.aggregation == "logistic"):
                what = "noisy features" if noisy is not None else "aggregation='logistic'"
                raise ValueError(f"{what} need(s) adversarial features at fit() (the positives of the regression).")
            # a fixed shuffle so that the reference minibatches mix classes even if the data are sorted by class
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
            self._tensors = {layer: {"reference": f[perm.to(f.device)]} for layer, f in feats.items()}
            if adversarial is not None:
                adv = self._prepare(adversarial, "adversarial")
                with torch.no_grad():
                    parts = [self._lids(feats, torch.argsort(perm)), self._lids(adv, None)]
                    if noisy is not None:
                        parts.append(self._lids(self._prepare(noisy, "noisy"), None))
                x = torch.cat([p.to(torch.float64).cpu() for p in parts])
                y = torch.zeros(x.shape[0], dtype=torch.long)
                y[n : n + parts[1].shape[0]] = 1
                self._fit_regression(x, y)
        return self

    def _fit_regression(self, x: torch.Tensor, y: torch.Tensor) -> None:
        LogisticRegression, _ = optional_import("sklearn.linear_model", name="LogisticRegression")
        mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
        z = ((x - mean) / std).numpy()
        yn = y.numpy()
        if self.aggregation == "logistic":
            lr = LogisticRegression(C=self.C, max_iter=1000).fit(z, yn)
            coef = torch.as_tensor(lr.coef_[0], dtype=torch.float64)
            intercept = torch.as_tensor(lr.intercept_, dtype=torch.float64)
        else:
            fits = [LogisticRegression(C=self.C, max_iter=1000).fit(z[:, i : i + 1], yn) for i in range(z.shape[1])]
            coef = torch.as_tensor([f.coef_[0, 0] for f in fits], dtype=torch.float64)
            intercept = torch.as_tensor([f.intercept_[0] for f in fits], dtype=torch.float64)
        self._tensors[""] = {"mean": mean, "std": std, "coef": coef, "intercept": intercept}

    def _score_layers(
        self, features: OrderedDict[str, torch.Tensor], pred_labels: torch.Tensor | None
    ) -> OrderedDict[str, torch.Tensor]:
        lids = self._lids(features, None)
        return OrderedDict((layer, lids[:, i]) for i, layer in enumerate(features))

    def _combine(self, per_layer: Any) -> torch.Tensor:
        lids = torch.stack(list(per_layer.values()), 1)
        if not self.supervised:
            return lids.mean(1)
        g = {key: self._get("", key, lids) for key in ("mean", "std", "coef", "intercept")}
        z = (lids - g["mean"]) / g["std"]
        if self.aggregation == "logistic":
            return z @ g["coef"] + g["intercept"]
        return (z * g["coef"] + g["intercept"]).mean(1)
