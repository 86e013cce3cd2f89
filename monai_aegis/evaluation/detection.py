# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Attack a defended model and score its Shield on clean vs adversarial images (shared by the validation handler
and the evaluation runner)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.utils import convert_to_tensor

from ..attacks import Attack, make_aegis_attack
from ..attacks.targets import other_class_targets  # re-exported: the evaluation's seeded targets
from ..metrics import detection_auroc, tpr_at_tnr, tpr_key
from ..networks.nets.aegis import AegisWrapper
from ..utils.batches import iter_batches
from ..utils.validation import check_labels

__all__ = ["ShieldDetectionResult", "detection_metrics", "evaluate_shield_detection", "other_class_targets"]


def detection_metrics(
    clean_scores: torch.Tensor,
    adv_scores: torch.Tensor,
    clean_mask: torch.Tensor | None = None,
    adv_mask: torch.Tensor | None = None,
    tnr: float = 0.9,
) -> dict[str, float]:
    """AUROC and TPR at ``tnr`` of ``adv_scores[adv_mask]`` (positives) vs ``clean_scores[clean_mask]`` (negatives).

    The usual detection protocol takes as negatives the clean images the classifier gets right
    (``clean_mask = correct``) and as positives the *successful* adversarial versions of those images
    (``adv_mask = correct & success``): a failed attack, or an image misclassified to begin with, is no adversarial
    example to detect. Scores: higher = more adversarial.

    Args:
        clean_scores: ``(N,)`` detector scores of clean images.
        adv_scores: ``(M,)`` scores of adversarial images.
        clean_mask: ``(N,)`` bool selection of the negatives (``None``: all).
        adv_mask: ``(M,)`` bool selection of the positives (``None``: all).
        tnr: true-negative rate of the reported TPR.

    Returns:
        ``{"auroc", "tpr@<tnr>tnr", "n_clean", "n_adv"}``; AUROC and TPR are NaN without negatives or positives.
    """
    neg, pos = clean_scores.detach().cpu(), adv_scores.detach().cpu()
    if clean_mask is not None:
        neg = neg[clean_mask.bool().cpu()]
    if adv_mask is not None:
        pos = pos[adv_mask.bool().cpu()]
    key = tpr_key(tnr)
    out = {"auroc": float("nan"), key: float("nan"), "n_clean": int(neg.numel()), "n_adv": int(pos.numel())}
    if neg.numel() and pos.numel():
        out["auroc"] = detection_auroc(neg, pos)
        out[key] = tpr_at_tnr(neg, pos, tnr)
    return out


@dataclass
class ShieldDetectionResult:
    """Per-sample outcome of attacking a defended model; scores follow the detection convention (higher = more
    adversarial, ``-`` the Shield's clean logit of the predicted class)."""

    clean_scores: torch.Tensor
    adv_scores: torch.Tensor
    success: torch.Tensor
    clean_correct: torch.Tensor
    clean_accept: torch.Tensor
    adv_accept: torch.Tensor
    linf: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor
    adv_correct: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics(self, tnr: float = 0.9) -> dict[str, float]:
        """AUROC and TPR at ``tnr`` (see :func:`detection_metrics`: clean images classified correctly vs their
        successful adversarial versions), plus attack success, clean accuracy, acceptance rates and robust accuracy
        (a sample is defended if its adversarial version is rejected or classified correctly)."""
        succ = self.success
        adv_correct = self.adv_correct if self.adv_correct is not None else ~succ
        out = {
            "attack_success": float(succ.float().mean()),
            "clean_accuracy": float(self.clean_correct.float().mean()),
            "clean_accepted": float(self.clean_accept.float().mean()),
            "adv_accepted": float(self.adv_accept[succ].float().mean()) if succ.any() else float("nan"),
            "robust_accuracy": float((~self.adv_accept | adv_correct).float().mean()),
            "n": int(succ.numel()),
            "n_successful": int(succ.sum()),
        }
        det = detection_metrics(self.clean_scores, self.adv_scores, self.clean_correct, self.clean_correct & succ, tnr)
        out.update({k: v for k, v in det.items() if k not in ("n_clean", "n_adv")})
        return out


def evaluate_shield_detection(
    wrapper: AegisWrapper,
    data: Any,
    attack: str | Attack | Callable[..., Any] = "PGD",
    attack_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
    max_batches: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
) -> ShieldDetectionResult:
    """Attack every batch of ``data`` (targeted, towards another class) and screen clean and adversarial images.

    Args:
        wrapper: the defended model; its threshold must be set (``calibrate``) for acceptance flags.
        data: an ``(images, labels)`` tensor pair or an iterable of batches (dicts or pairs).
        attack: a registry name built with :func:`~monai_aegis.attacks.make_aegis_attack` (through the wrapper's
            Cushion, Shield-aware for WB/WB_d/SPGD/OPGD), an :class:`~monai_aegis.attacks.Attack`, or a callable
            ``(x, y, target) -> result``.
        attack_kwargs: overrides for a named attack (``eps``, ``steps``, ...).
        seed: seed of the attack targets for more than 2 classes.
        max_batches: stop after this many batches.
    """
    if isinstance(attack, str):
        attack = make_aegis_attack(attack, wrapper, **dict(attack_kwargs or {}))
    elif attack_kwargs:
        raise ValueError("attack_kwargs are only used with a named attack.")
    if wrapper.shield is None:
        raise ValueError("evaluate_shield_detection needs an AegisWrapper with a Shield.")
    num_classes = wrapper.shield.num_classes
    device = next(wrapper.classifier.parameters()).device
    acc: dict[str, list[torch.Tensor]] = {}
    was_training = wrapper.training
    wrapper.eval()
    try:
        for i, (x, y) in enumerate(iter_batches(data, None, image_key, label_key, labels=True)):
            if max_batches is not None and i >= max_batches:
                break
            x = convert_to_tensor(x, track_meta=False).to(device)
            y = check_labels(convert_to_tensor(y, track_meta=False).reshape(x.shape[0], -1)[:, 0], x.shape[0],
                             num_classes, "label").to(device)
            t = other_class_targets(y, num_classes, seed + i)
            res = attack(x, y, target=t)
            x_adv = getattr(res, "x_adv", res)
            with torch.no_grad():
                clean = wrapper.screen(x, check_input=False)
                adv = wrapper.screen(x_adv, check_input=False)
            success = adv["pred"] == t
            parts = {
                "clean_scores": clean["score"], "adv_scores": adv["score"], "success": success,
                "clean_correct": clean["pred"] == y, "clean_accept": clean["accept"], "adv_accept": adv["accept"],
                "linf": (x_adv - x).flatten(1).abs().amax(1), "labels": y, "targets": t, "adv_correct": adv["pred"] == y,
            }
            for k, v in parts.items():
                acc.setdefault(k, []).append(v.detach().cpu())
    finally:
        wrapper.train(was_training)
    if not acc:
        raise ValueError("no data to evaluate.")
    return ShieldDetectionResult(**{k: torch.cat(v) for k, v in acc.items()})
