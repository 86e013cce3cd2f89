# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Site adaptation of a trained Shield: adversarial fine-tuning on a few hundred clean, unlabelled local images.

A Shield trained on one hospital's export pipeline rejects many clean studies of another (the Kermany official test
split, squashed and JPEG-coded, loses 40 % of its clean images). Moving the thresholds to the local images
(:func:`monai_aegis.bundle.recalibrate_site`) lets them pass but loosens the Shield for attacks too. Adaptation
instead teaches the Shield that the local pipeline's clean images are clean, with the same adversarial objective it
was trained with: the local images (labelled by the classifier's own predictions, which is what the deployed system
screens against) join the training images as positives *and* as sources of negatives (attacked towards the other
classes against the current Shield, through the Cushion), at the final training budget. The thresholds are then
recalibrated on the original clean validation images, so the deployed rule is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from ..attacks.presets import DEFAULT_EPS_LINF
from ..networks.nets.aegis import AegisWrapper
from ..utils import stack_batches, stack_images, tensor_loader

__all__ = ["adapt_shield_to_site", "pseudo_labels"]


@torch.no_grad()
def pseudo_labels(wrapper: AegisWrapper, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The deployed system's predictions (Cushion, then classifier) on ``images``: the classes the Shield will be
    asked about for them. Puts ``wrapper`` in eval mode (as it is deployed)."""
    wrapper.eval()
    dev = next(wrapper.classifier.parameters()).device
    return torch.cat([wrapper(x.to(dev)).argmax(1).cpu() for x in images.split(int(batch_size))])


def adapt_shield_to_site(
    wrapper: AegisWrapper,
    site_data: Any,
    train_data: Any,
    val_data: Any,
    adversary: Any = None,
    epochs: int = 24,
    epoch_length: int | None = 12,
    lr: float = 5e-4,
    eps: float = DEFAULT_EPS_LINF,
    site_fraction: float = 0.9,
    batch_size: int = 32,
    tnr: float | None = None,
    seed: int = 0,
    device: Any = None,
    train_handlers: Sequence[Any] = (),
    augment: Any = None,
    outliers: Any = None,
    outlier_fraction: float = 0.25,
    threshold_tnr: float | None = None,
    check_data: Any = None,
) -> dict[str, Any]:
    """Fine-tune ``wrapper``'s Shield on local clean images mixed with its training images, then recalibrate.

    The classifier's weights, the Cushion and the Shield's input standardisation stay as they are (the classifier is
    frozen, ``requires_grad=False``, as in :class:`~monai_aegis.engines.ShieldTrainer`); the Shield's weights and the
    thresholds change, in place. Each training batch draws about ``site_fraction`` of its images from the
    local set (repeated as needed) and the rest from ``train_data``; the local images carry the classifier's
    predictions as labels (:func:`pseudo_labels`), so no annotation is needed -- but, as for any calibration set,
    whoever controls these images controls what the Shield learns to accept: they must be clean.

    Args:
        wrapper: a trained, calibrated :class:`~monai_aegis.networks.AegisWrapper` (modified in place).
        site_data: the local clean images, preprocessed like the training images: a loader of ``{"image"}``
            batches or a tensor ``(N, C, H, W)``; labels unused.
        train_data: the Shield's original training images with labels (a loader of batches or ``(x, y)`` tensors).
        val_data: the original clean validation images the thresholds are recalibrated on (labels unused).
        adversary: the training attacker (e.g. the bundle's ``ShieldAdversary``); default: PGD + WB, 10 steps.
        epochs, epoch_length: fine-tuning length (``epoch_length`` batches per epoch; ``None``: one pass).
        lr: Adam learning rate of the fine-tuning.
        eps: the attack budget, held throughout (the final budget of the original training).
        site_fraction: target share of local images in the training mix, in (0, 1).
        batch_size: batch size of the training mix.
        tnr: calibration target on ``val_data`` (default: the wrapper's own calibration target, so the deployed rule
            stays the same).
        seed: seed of the shuffle, the target draw and the attackers' random starts.
        device: where to train (default: the classifier's device).
        train_handlers: extra Ignite handlers of the trainer (e.g. a ``StatsHandler``).
        augment, outliers, outlier_fraction, threshold_tnr: as in the Shield's original training
            (:class:`~monai_aegis.engines.ShieldTrainer`); give the same ones, or the fine-tuning forgets, e.g., to
            reject the out-of-distribution inputs it was trained on.

    Returns:
        a report: ``n_site``, ``site_predicted_classes``, ``site_repeats``, ``n_train``, ``epochs``, ``iterations``,
        ``eps``, ``tnr``, ``seconds``, ``threshold_before`` / ``threshold_after``, ``site_accepted_before`` /
        ``site_accepted_after`` (on the adaptation images themselves: in-sample), ``val_accepted``; with
        ``check_data`` also ``n_check``, ``check_accepted_before`` / ``check_accepted_after`` (out of sample).

    Raises:
        ValueError: a wrapper without Shield or thresholds, an empty image set, or a ``site_fraction`` outside (0, 1).
    """
    from .adversary import ShieldAdversary
    from .shield_training import ShieldTrainer

    if wrapper.shield is None or wrapper.threshold.numel() == 0:
        raise ValueError("site adaptation needs a trained, calibrated Aegis (a Shield with thresholds).")
    if not 0.0 < float(site_fraction) < 1.0:
        raise ValueError(f"site_fraction must lie in (0, 1), got {site_fraction}.")
    t0 = time.perf_counter()
    device = torch.device(device) if device is not None else next(wrapper.classifier.parameters()).device
    x_site = stack_images(site_data, name="site_data")
    x_train, y_train = stack_batches(train_data, name="train_data")
    if x_site.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"local images are {tuple(x_site.shape[1:])}, the training images "
                         f"{tuple(x_train.shape[1:])}: preprocess them the same way.")
    x_check = None if check_data is None else stack_images(check_data, name="check_data")
    if x_check is not None and x_check.shape[1:] != x_site.shape[1:]:
        raise ValueError(f"check images are {tuple(x_check.shape[1:])}, the local images "
                         f"{tuple(x_site.shape[1:])}: preprocess them the same way.")
    y_site = pseudo_labels(wrapper, x_site)

    def accepted(thr: torch.Tensor, x: torch.Tensor | None = x_site) -> float | None:
        from ..networks import per_sample_threshold

        if x is None:
            return None
        scores, pred = wrapper.shield_scores(x)
        return float((scores >= per_sample_threshold(thr.to(scores), pred)).float().mean())

    before = wrapper.threshold.detach().cpu().clone()
    site_before, check_before = accepted(before), accepted(before, x_check)
    share = float(site_fraction) / (1.0 - float(site_fraction))
    repeats = max(1, round(share * x_train.shape[0] / x_site.shape[0]))
    x_mix = torch.cat([x_train] + [x_site] * repeats)
    y_mix = torch.cat([y_train] + [y_site] * repeats)
    loader = tensor_loader(x_mix, y_mix, int(batch_size), shuffle=True, seed=int(seed))
    if adversary is None:
        adversary = ShieldAdversary(wrapper, ["pgd", "wb"], steps=10)
    length = None if not epoch_length else min(int(epoch_length), len(loader))
    optimizer = torch.optim.Adam(wrapper.shield.parameters(), lr=float(lr))
    trainer = ShieldTrainer(device, int(epochs), loader, wrapper, optimizer, adversary=adversary, eps=float(eps),
                            seed=int(seed), stats_batches=0, epoch_length=length, amp=False,
                            train_handlers=list(train_handlers), augment=augment, outliers=outliers,
                            outlier_fraction=outlier_fraction, threshold_tnr=threshold_tnr)
    trainer.run()
    wrapper.eval()
    per_class = bool(wrapper.calibration.get("per_class", before.numel() > 1))
    tnr = float(wrapper.calibration.get("tnr", 0.9) if tnr is None else tnr)
    wrapper.calibrate(val_data, tnr=tnr, per_class=per_class)
    wrapper.calibration = {**wrapper.calibration, "site_adapted": True}
    after = wrapper.threshold.detach().cpu().clone()
    check = {} if x_check is None else {"n_check": int(x_check.shape[0]), "check_accepted_before": check_before,
                                        "check_accepted_after": accepted(after, x_check)}
    return {
        "n_site": int(x_site.shape[0]),
        "site_predicted_classes": torch.bincount(y_site, minlength=wrapper.shield.num_classes).tolist(),
        "site_repeats": repeats,
        "n_train": int(x_train.shape[0]),
        "epochs": int(epochs),
        "iterations": int(trainer.state.iteration),
        "eps": float(eps),
        "tnr": tnr,
        "seconds": time.perf_counter() - t0,
        "threshold_before": before.tolist(),
        "threshold_after": after.tolist(),
        "site_accepted_before": site_before,
        "site_accepted_after": accepted(after),
        "val_accepted": float(wrapper.calibration.get("accepted_fraction", float("nan"))),
        **check,
    }
