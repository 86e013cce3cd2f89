# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Adversarial-detection metrics: ROC curve, AUROC, threshold at a target TNR and TPR at that TNR.

Convention used throughout ``monai_aegis``: **positives are adversarial, negatives are clean, and a higher
score means "more adversarial"**. Every function takes the two score populations separately
(``clean_scores``, ``adv_scores``) instead of ``(y_true, y_score)``, so the labels can never be flipped by
accident.

Inputs may be torch tensors (any device; computed there in float64), numpy arrays or sequences, of shape
``(N,)`` (``(N, 1)`` is accepted and squeezed). They are checked: empty inputs, NaN/Inf scores and
non-vector shapes raise ``ValueError``. :func:`roc_curve` and :func:`detection_auroc` reproduce
``sklearn.metrics.roc_curve`` / ``roc_auc_score`` with ``y_true = [0] * len(clean) + [1] * len(adv)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch

__all__ = [
    "ScoreArray",
    "accept_mask",
    "check_threshold",
    "detection_auroc",
    "per_sample_threshold",
    "roc_curve",
    "threshold_at_tnr",
    "tpr_at_tnr",
    "tpr_key",
]

#: Anything accepted as a score vector.
ScoreArray = Union[torch.Tensor, np.ndarray, Sequence[float]]


def tpr_key(tnr: float) -> str:
    """The metric name of the TPR at ``tnr`` TNR, e.g. ``"tpr@90tnr"`` for 0.9 (``"tpr@95tnr"``, ``"tpr@99.5tnr"``)."""
    return f"tpr@{100 * float(tnr):.10g}tnr"


def _as_scores(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Return ``x`` as a finite, non-empty ``(N,)`` float64 tensor (on ``device`` when given)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{name} must be a tensor, numpy array or sequence of numbers, got {type(x).__name__}."
            ) from e
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold real-valued scores, got dtype {t.dtype}.")
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise ValueError(f"{name} must be a vector of shape (N,) (one score per sample), got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty; at least one score is needed.")
    if device is not None:
        t = t.to(device)
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        bad = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        raise ValueError(f"{name} contains {bad} scores; detection metrics need finite scores.")
    return t


def _check_tnr(tnr: float) -> float:
    v = float(tnr)
    if not 0.0 < v <= 1.0:
        raise ValueError(f"tnr must lie in (0, 1], got {tnr!r}.")
    return v


def roc_curve(clean_scores: ScoreArray, adv_scores: ScoreArray, drop_intermediate: bool = True) -> tuple[Any, Any, Any]:
    """ROC curve of adversarial (positive) vs clean (negative) scores, identical to scikit-learn's.

    The point ``i`` is ``(fpr[i], tpr[i])`` for the rule "adversarial iff ``score >= thresholds[i]``";
    ``thresholds[0] = inf`` so the curve starts at ``(0, 0)``, and thresholds decrease.

    Args:
        clean_scores: scores of clean samples (negatives).
        adv_scores: scores of adversarial samples (positives).
        drop_intermediate: drop collinear points that do not change the curve's shape (scikit-learn's default).

    Returns:
        ``(fpr, tpr, thresholds)`` as float64 numpy arrays when neither input is a torch tensor, otherwise as
        float64 tensors on the device of ``clean_scores`` (or of ``adv_scores`` if only that is a tensor).

    Raises:
        ValueError: for empty inputs, NaN/Inf scores or non-vector shapes.
    """
    tensor_in = isinstance(clean_scores, torch.Tensor) or isinstance(adv_scores, torch.Tensor)
    device = (
        clean_scores.device
        if isinstance(clean_scores, torch.Tensor)
        else (adv_scores.device if isinstance(adv_scores, torch.Tensor) else None)
    )
    neg = _as_scores(clean_scores, "clean_scores", device)
    pos = _as_scores(adv_scores, "adv_scores", neg.device)
    fpr, tpr, thresholds = _roc(neg, pos, drop_intermediate)
    if tensor_in:
        return fpr, tpr, thresholds
    return fpr.cpu().numpy(), tpr.cpu().numpy(), thresholds.cpu().numpy()


def _roc(neg: torch.Tensor, pos: torch.Tensor, drop_intermediate: bool) -> tuple[torch.Tensor, ...]:
    # Same algorithm as sklearn.metrics._ranking (stable descending sort, one point per distinct score).
    scores = torch.cat([neg, pos])
    y = torch.cat([torch.zeros_like(neg), torch.ones_like(pos)])
    order = torch.argsort(scores, descending=True, stable=True)
    scores, y = scores[order], y[order]
    idx = torch.nonzero(torch.diff(scores)).flatten()
    idx = torch.cat([idx, idx.new_tensor([scores.numel() - 1])])
    tps = torch.cumsum(y, 0)[idx]
    fps = 1 + idx.to(torch.float64) - tps
    thresholds = scores[idx]
    if drop_intermediate and fps.numel() > 2:
        corner = (torch.diff(fps, 2) != 0) | (torch.diff(tps, 2) != 0)
        keep = torch.cat([corner.new_ones(1), corner, corner.new_ones(1)])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    zero = fps.new_zeros(1)
    fps, tps = torch.cat([zero, fps]), torch.cat([zero, tps])
    thresholds = torch.cat([thresholds.new_full((1,), math.inf), thresholds])
    return fps / fps[-1], tps / tps[-1], thresholds


def detection_auroc(clean_scores: ScoreArray, adv_scores: ScoreArray) -> float:
    """Area under the ROC curve of adversarial (positive) vs clean (negative) scores.

    Equals ``sklearn.metrics.roc_auc_score(y_true, y_score)`` (trapezoidal area; tied scores count one half),
    i.e. the probability that a random adversarial sample scores higher than a random clean one.

    Args:
        clean_scores: scores of clean samples, shape ``(N,)``.
        adv_scores: scores of adversarial samples, shape ``(M,)``.

    Returns:
        the AUROC in ``[0, 1]`` as a Python float (0.5 = chance, 1 = perfect separation).

    Raises:
        ValueError: for empty inputs, NaN/Inf scores or non-vector shapes.
    """
    device = clean_scores.device if isinstance(clean_scores, torch.Tensor) else None
    neg = _as_scores(clean_scores, "clean_scores", device)
    pos = _as_scores(adv_scores, "adv_scores", neg.device)
    fpr, tpr, _ = _roc(neg, pos, drop_intermediate=True)
    return float((torch.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0).sum())


def threshold_at_tnr(clean_scores: ScoreArray, tnr: float = 0.9) -> float:
    """Detection threshold that accepts (at least) a fraction ``tnr`` of the clean samples.

    Decision rule: a sample is flagged **adversarial iff ``score > threshold``** (strictly greater); a score
    equal to the threshold is accepted as clean. The threshold is the ``k``-th smallest clean score with
    ``k = ceil(tnr * N)``, so at least ``k`` clean samples (``>= tnr * N``) are accepted. Ties are handled
    deterministically: every clean sample tied with the threshold is accepted, so the achieved TNR may exceed
    ``tnr``. It is the smallest threshold reaching the target TNR, hence the one with the largest TPR.

    Args:
        clean_scores: scores of clean samples, shape ``(N,)``.
        tnr: target true-negative rate in ``(0, 1]``; ``1`` returns the largest clean score.

    Returns:
        the threshold as a Python float.

    Raises:
        ValueError: for empty input, NaN/Inf scores, a non-vector shape or ``tnr`` outside ``(0, 1]``.
    """
    tnr = _check_tnr(tnr)
    device = clean_scores.device if isinstance(clean_scores, torch.Tensor) else None
    neg = _as_scores(clean_scores, "clean_scores", device)
    n = neg.numel()
    # round() guards against tnr * n landing a hair above an integer (0.9 * 100 = 90.00000000000001).
    k = min(n, max(1, math.ceil(round(tnr * n, 9))))
    return float(torch.kthvalue(neg, k).values)


def tpr_at_tnr(clean_scores: ScoreArray, adv_scores: ScoreArray, tnr: float = 0.9) -> float:
    """True-positive rate (fraction of adversarial samples detected) at the :func:`threshold_at_tnr` threshold.

    ``TPR = mean(adv_scores > threshold_at_tnr(clean_scores, tnr))``. This equals the largest TPR on the
    :func:`roc_curve` among points with ``FPR <= 1 - tnr``.

    Args:
        clean_scores: scores of clean samples, shape ``(N,)``.
        adv_scores: scores of adversarial samples, shape ``(M,)``.
        tnr: target true-negative rate in ``(0, 1]`` (the paper reports TPR at 90% TNR).

    Returns:
        the TPR in ``[0, 1]`` as a Python float.

    Raises:
        ValueError: for empty inputs, NaN/Inf scores, non-vector shapes or ``tnr`` outside ``(0, 1]``.
    """
    threshold = threshold_at_tnr(clean_scores, tnr)
    device = clean_scores.device if isinstance(clean_scores, torch.Tensor) else None
    pos = _as_scores(adv_scores, "adv_scores", device)
    return float((pos > threshold).to(torch.float64).mean())


def check_threshold(threshold: float | Sequence[float] | torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """A reject threshold as a finite float32 ``(1,)`` (global) or ``(num_classes,)`` (per class) tensor.

    Raises:
        ValueError: no values, non-finite values, more than one dimension, or (with ``num_classes``) a length
            other than 1 or ``num_classes``.
    """
    t = torch.as_tensor(threshold, dtype=torch.float32).detach()
    if t.ndim > 1 or t.numel() == 0 or not bool(torch.isfinite(t).all()):
        raise ValueError("threshold must be a finite float or a (num_classes,) tensor of finite floats.")
    t = t.reshape(-1)
    if num_classes is not None and t.numel() not in (1, int(num_classes)):
        raise ValueError(f"threshold must be a scalar or have {num_classes} entries, got {t.numel()}.")
    return t


def per_sample_threshold(threshold: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``(N,)`` reject threshold of each sample: the global ``(1,)`` threshold, or the ``(Y,)`` per-class one indexed
    by the predicted classes ``pred``."""
    return threshold.reshape(-1).expand(pred.shape[0]) if threshold.numel() == 1 else threshold[pred]


def accept_mask(
    scores: torch.Tensor, threshold: float | torch.Tensor, pred: torch.Tensor | None = None
) -> torch.Tensor:
    """The one decision rule of every detector in monai_aegis: a sample is **accepted** (taken as clean) iff its
    score is ``<=`` the threshold and flagged adversarial iff it is ``>`` (the rule :func:`threshold_at_tnr`
    calibrates). Scores follow one convention: higher = more adversarial (the baselines' ``score``,
    :meth:`monai_aegis.networks.Shield.score`, ``AegisWrapper.screen(x)["score"]``).

    Args:
        scores: ``(N,)`` detection scores.
        threshold: in score units: a float or ``(1,)`` global threshold, a ``(Y,)`` per-class one (with ``pred``), or
            an ``(N,)`` per-sample one (without ``pred``).
        pred: ``(N,)`` predicted classes, indexing a per-class threshold.

    Returns:
        ``(N,)`` bool.

    Raises:
        ValueError: a per-class threshold without ``pred`` (one whose length is not ``N``).
    """
    t = torch.as_tensor(threshold, dtype=scores.dtype, device=scores.device).reshape(-1)
    if pred is not None:
        t = per_sample_threshold(t, pred.to(scores.device))
    elif t.numel() not in (1, scores.numel()):
        raise ValueError(
            f"a per-class threshold ({t.numel()} entries) needs the predicted classes (pred=) of the {scores.numel()} "
            "scores."
        )
    return scores <= t.reshape(scores.shape) if t.numel() > 1 else scores <= t
