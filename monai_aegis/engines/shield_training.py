# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Adversarial training of the Shield (Medical Aegis, Eq. 3 and Eq. 4) on a MONAI ``SupervisedTrainer``.

The trainer's ``network`` is a :class:`ShieldScorer` (images -> per-class clean logits through the Cushion and the
frozen classifier) and its ``iteration_update`` is :class:`AdversarialShieldUpdate`, which, following the MONAI
precedent of ``monai.apps.deepedit.interaction.Interaction``, crafts the adversarial negatives with the model in
the loop and then hands the enlarged batch to the trainer's standard ``_iteration``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedTrainer
from monai.utils import convert_to_tensor, min_version, optional_import
from torch import nn

from ..attacks.presets import DEFAULT_EPS_LINF
from ..attacks.targets import sample_other_classes
from ..networks.nets.aegis import AegisWrapper
from ..networks.nets.shield import Shield
from ..utils.batches import batch_ids
from ..utils.state import numpy_state_from_dict, numpy_state_to_dict
from .classifier_training import labelled_batch

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Accuracy, _ = optional_import("ignite.metrics", "0.4.11", min_version, "Accuracy")

__all__ = ["AdversarialShieldUpdate", "ShieldLoss", "ShieldScorer", "ShieldTrainer", "freeze", "sample_other_classes"]


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module``: no parameter requires grad and it stays in eval mode (BatchNorm statistics fixed)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class ShieldScorer(nn.Module):
    """Images -> ``(B, Y)`` Shield clean logits of ``S_y[f(C(x))]``, through the wrapper's Cushion and frozen
    classifier. Switching it to train mode trains only the Shield: the classifier always stays in eval mode.

    Args:
        wrapper: the :class:`AegisWrapper` holding classifier, Shield, hooked layers and Cushion (Aegis mode when
            the wrapper has a Cushion: features are ``f(C(x))``).
    """

    def __init__(self, wrapper: AegisWrapper) -> None:
        super().__init__()
        if wrapper.shield is None:
            raise ValueError("ShieldScorer needs an AegisWrapper with a Shield.")
        self.wrapper = wrapper

    @property
    def shield(self) -> Shield:
        assert self.wrapper.shield is not None
        return self.wrapper.shield

    def train(self, mode: bool = True) -> ShieldScorer:
        self.training = mode
        self.wrapper.train(mode)  # the wrapper keeps classifier and Cushion in eval mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shield(self.wrapper.shield_features(x))


class ShieldLoss(nn.Module):
    """Binary cross-entropy form of the paper's Eq. 3.

    ``L = -[ mean_pos log sigma(S_y(x)) + mean_neg log(1 - sigma(S_t(x_adv))) ]``: clean images of class ``y`` are
    positives of ``S_y``; adversarial images aimed at class ``t`` are negatives of ``S_t``. Positives and negatives
    are averaged separately so that their balance does not depend on the batch composition.

    Shape:
        - pred: ``(N, Y)`` Shield logits.
        - target: ``(N, 2)`` integer ``[class, is_clean]`` per sample.
        - output: scalar.
    """

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.pos_weight = float(pos_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != 2 or target.ndim != 2 or target.shape != (pred.shape[0], 2):
            raise ValueError(f"ShieldLoss expects pred (N, Y) and target (N, 2), got {tuple(pred.shape)}, "
                             f"{tuple(target.shape)}.")
        logit = Shield.select(pred, target[:, 0])
        clean = target[:, 1].to(logit.dtype)
        bce = nn.functional.binary_cross_entropy_with_logits(logit, clean, reduction="none")
        pos, neg = clean > 0.5, clean <= 0.5
        loss = logit.new_zeros(())
        if pos.any():
            loss = loss + self.pos_weight * bce[pos].mean()
        if neg.any():
            loss = loss + bce[neg].mean()
        return loss


AdversaryFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], Any]


class AdversarialShieldUpdate:
    """``iteration_update`` for a MONAI ``SupervisedTrainer`` that trains a Shield adversarially.

    Each iteration: take a batch of clean images ``x`` with labels ``y``; draw for each a target class ``t != y``;
    craft ``x_adv = adversary(x, y, t, eps)`` -- an attack *from images of other classes* that maximises ``S_t``
    (and, depending on the adversary, also pushes the classifier towards ``t``) -- against the *current* Shield;
    then run the trainer's standard iteration on ``[x; x_adv]`` with targets ``[(y, 1); (t, 0)]`` and
    :class:`ShieldLoss`. ``eps`` is read from ``engine.state.<eps_attr>`` (set per epoch by
    :class:`~monai_aegis.handlers.EpsilonScheduler`), falling back to ``eps``.

    The iteration output also carries ``adv_success`` (fraction of ``x_adv`` that the classifier assigns to
    ``t``) and ``eps`` for logging.

    Args:
        adversary: callable ``(x, y, target, eps) -> x_adv`` (or an object with ``x_adv``), e.g.
            :class:`~monai_aegis.engines.ShieldAdversary`.
        num_classes: number of classes.
        eps: default L-inf budget when the engine state has none.
        eps_attr: engine state attribute holding the current budget.
        seed: seed of the target-class draw (``None``: torch's global RNG).
        augment: a batch transform applied to the clean images before anything else, e.g.
            :class:`~monai_aegis.transforms.RandBenignShift`: the positives are shifted clean images and the
            negatives are attacks from shifted images, so the Shield learns benign shifts as clean.
        threshold_tnr: when set, the training attackers' acceptance threshold follows the deployed rule: after
            every iteration, per class, the ``1 - threshold_tnr`` quantile of the Shield's logits on that batch's
            clean images (a running average with ``threshold_momentum``) is written to ``adversary.threshold``
            (the adversary must have that attribute, as :class:`~monai_aegis.engines.ShieldAdversary` does), so
            the gated attackers aim at the threshold the calibrated Shield will use, not at logit 0.
        threshold_momentum: weight of the previous value in the running average.
        outliers: a batch transform turning clean images into out-of-distribution ones, e.g.
            :class:`~monai_aegis.transforms.RandOutlier`: ``outlier_fraction`` of each batch's (augmented) clean
            images are turned into outliers and added to the negatives, each for a class drawn uniformly, so every
            class's detector learns to reject inputs that are not images of the task at all.
        outlier_fraction: share of the batch size added as outliers (at least one image when ``outliers`` is set).
        persistent_starts: each image's attack starts from its own perturbation of the previous epoch (projected
            onto the current budget) instead of a random point, as in "free" / ATTA adversarial training
            (Shafahi et al. 2019; Zheng et al. 2020), so that fewer steps per epoch reach the same strength. Needs
            per-image ids in the batches (:func:`~monai_aegis.utils.batch_ids`: an ``"id"`` entry, as
            :func:`~monai_aegis.utils.tensor_loader` adds, or images loaded from files) and an adversary that takes
            ``start=`` (:class:`~monai_aegis.engines.ShieldAdversary`). The perturbations are kept in float16 on
            the CPU (one image's worth per training image) and saved with :meth:`state_dict`.
    """

    def __init__(
        self,
        adversary: AdversaryFn,
        num_classes: int,
        eps: float = DEFAULT_EPS_LINF,
        eps_attr: str = "eps",
        seed: int | None = None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        threshold_tnr: float | None = None,
        threshold_momentum: float = 0.9,
        outliers: Callable[[torch.Tensor], torch.Tensor] | None = None,
        outlier_fraction: float = 0.25,
        persistent_starts: bool = False,
    ) -> None:
        self.adversary = adversary
        self.persistent_starts = bool(persistent_starts)
        if self.persistent_starts and "start" not in inspect.signature(adversary).parameters:
            raise ValueError("persistent_starts needs an adversary that takes start= (e.g. ShieldAdversary).")
        self.starts: dict[str, torch.Tensor] = {}
        self.augment = augment
        if not 0.0 < float(outlier_fraction) <= 1.0:
            raise ValueError(f"outlier_fraction must lie in (0, 1], got {outlier_fraction}.")
        self.outliers = outliers
        self.outlier_fraction = float(outlier_fraction)
        if threshold_tnr is not None:
            if not 0.0 < float(threshold_tnr) < 1.0:
                raise ValueError(f"threshold_tnr must lie in (0, 1), got {threshold_tnr}.")
            if not hasattr(adversary, "threshold"):
                raise ValueError("threshold_tnr needs an adversary with a 'threshold' attribute (ShieldAdversary).")
        if not 0.0 <= float(threshold_momentum) < 1.0:
            raise ValueError(f"threshold_momentum must lie in [0, 1), got {threshold_momentum}.")
        self.threshold_tnr = None if threshold_tnr is None else float(threshold_tnr)
        self.threshold_momentum = float(threshold_momentum)
        self.threshold: torch.Tensor | None = None
        self.num_classes = int(num_classes)
        self.eps = float(eps)
        self.eps_attr = eps_attr
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def __call__(self, engine: Any, batchdata: Any) -> dict:
        x, y = labelled_batch(engine, batchdata, "Shield training", self.num_classes)
        if self.augment is not None:
            x = convert_to_tensor(self.augment(x), track_meta=False).to(x.device)
        target = sample_other_classes(y, self.num_classes, self.generator)
        eps = float(getattr(engine.state, self.eps_attr, None) or self.eps)
        engine.network.eval()
        if self.persistent_starts:
            ids = batch_ids(batchdata, x.shape[0])
            if ids is None:
                raise ValueError("persistent_starts needs per-image ids in the training batches: an 'id' entry "
                                 "(monai_aegis.utils.tensor_loader adds one) or images loaded from files.")
            out = self.adversary(x, y, target, eps, start=self._starts_for(ids, x, eps))
        else:
            out = self.adversary(x, y, target, eps)
        x_adv = getattr(out, "x_adv", out).detach()
        if self.persistent_starts:
            for key, delta in zip(ids, (x_adv - x).to("cpu", torch.float16).unbind(0)):
                self.starts[key] = delta.clone()
        success = getattr(out, "success", None)
        engine.network.train()
        images = [x, x_adv]
        labels = [torch.stack([y, torch.ones_like(y)], 1), torch.stack([target, torch.zeros_like(y)], 1)]
        if self.outliers is not None:
            k = max(1, round(self.outlier_fraction * x.shape[0]))
            images.append(convert_to_tensor(self.outliers(x[:k]), track_meta=False).to(x.device))
            cls = torch.randint(self.num_classes, (k,), generator=self.generator).to(y.device)
            labels.append(torch.stack([cls, torch.zeros_like(cls)], 1))
        batch = {"image": torch.cat(images), "label": torch.cat(labels)}
        output = engine._iteration(engine, batch)
        output["eps"] = eps
        if self.threshold_tnr is not None:
            self._track_threshold(output["pred"][: x.shape[0]], y)
            output["threshold"] = self.threshold.tolist()
        if success is not None:
            output["adv_success"] = float(torch.as_tensor(success).float().mean())
        return output


    @torch.no_grad()
    def _starts_for(self, ids: list[str], x: torch.Tensor, eps: float) -> torch.Tensor:
        """Starting points: each image plus its last perturbation, or a uniform random one in the ball for an image
        seen for the first time (or whose stored perturbation no longer fits its shape); within the clip range."""
        delta = (torch.rand(x.shape, generator=self.generator) * 2 - 1).mul_(eps).to(x.device, x.dtype)
        for i, key in enumerate(ids):
            old = self.starts.get(key)
            if old is not None and old.shape == x.shape[1:]:
                delta[i] = old.to(x.device, x.dtype)
        lo, hi = getattr(self.adversary, "clip", (0.0, 1.0))
        return (x + delta).clamp_(lo, hi)

    @torch.no_grad()
    def _track_threshold(self, clean_logits: torch.Tensor, y: torch.Tensor) -> None:
        """Update the running per-class threshold from this batch's clean logits and hand it to the adversary."""
        logit = Shield.select(clean_logits.detach().float(), y).cpu()
        y = y.cpu()
        q = 1.0 - float(self.threshold_tnr)
        prev = self.threshold
        new = torch.zeros(self.num_classes) if prev is None else prev.clone()
        for c in range(self.num_classes):
            sel = logit[y == c]
            if sel.numel() == 0:
                continue
            value = torch.quantile(sel, q)
            m = self.threshold_momentum
            new[c] = value if prev is None else m * prev[c] + (1 - m) * value
        self.threshold = new
        self.adversary.threshold = new.clone()  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run must continue: the running threshold, the target-class generator and the random
        states of the augmentation and the outliers (saved with the trainer by
        :class:`~monai_aegis.handlers.TrainingCheckpoint`)."""
        state: dict[str, Any] = {"threshold": self.threshold}
        if self.persistent_starts:
            state["starts"] = dict(self.starts)
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        for name in ("augment", "outliers"):
            r = getattr(getattr(self, name), "R", None)
            if isinstance(r, np.random.RandomState):
                state[name] = numpy_state_to_dict(r.get_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.threshold = state.get("threshold")
        if self.persistent_starts:
            self.starts = dict(state.get("starts") or {})
        if self.threshold is not None and self.threshold_tnr is not None:
            self.adversary.threshold = self.threshold.clone()  # type: ignore[attr-defined]
        if self.generator is not None and "generator" in state:
            self.generator.set_state(torch.as_tensor(state["generator"], dtype=torch.uint8))
        for name in ("augment", "outliers"):
            r = getattr(getattr(self, name), "R", None)
            if name in state and isinstance(r, np.random.RandomState):
                r.set_state(numpy_state_from_dict(state[name]))


def _detection_accuracy_output(output: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Ignite output transform: did the Shield call each sample right (clean logit > 0 iff clean)?"""
    pred, label = output["pred"], output["label"]
    logit = Shield.select(pred.detach(), label[:, 0])
    return (logit > 0).long(), label[:, 1].long()


class ShieldTrainer(SupervisedTrainer):
    """MONAI ``SupervisedTrainer`` that trains the Shield of an :class:`AegisWrapper` adversarially.

    Wires the parts of this module together: the classifier (and Cushion) are frozen, the network is a
    :class:`ShieldScorer`, the loss :class:`ShieldLoss`, the iteration :class:`AdversarialShieldUpdate` with the
    given ``adversary`` (default: the paper's PGD on ``S_t``, 10 steps, random start, through the Cushion). The key
    training metric ``detection_acc`` is the Shield's accuracy on the clean + adversarial batch. Attach an
    :class:`~monai_aegis.handlers.EpsilonScheduler` (ramp 1/256 -> 16/256) as a train handler to schedule the budget;
    without one, ``eps`` is used throughout.

    Before the first iteration of a fresh run, the Shield's input standardisation is fitted on clean features of
    up to ``stats_batches`` training batches (skipped when resuming from a checkpoint).

    Args:
        device: device to train on.
        max_epochs: number of epochs (the paper: 25).
        train_data_loader: clean training images with class labels (dict batches ``image``/``label`` or pairs).
        wrapper: the :class:`AegisWrapper` whose Shield is trained; its classifier is frozen in place.
        optimizer: optimiser over ``wrapper.shield.parameters()``.
        adversary: ``(x, y, target, eps) -> x_adv`` or an AttackResult; default ``ShieldAdversary(wrapper)``.
        eps: budget when no scheduler sets ``engine.state.eps``.
        seed: seed of the target-class draw and, at the start of a fresh run, of torch's global RNG (the attackers'
            random starts), so a run is reproducible whatever ran before it (``None``: neither is seeded).
        stats_batches: batches used to fit the Shield's input standardisation (0 to skip).
        augment: batch transform of the clean training images (see :class:`AdversarialShieldUpdate`), e.g.
            :class:`~monai_aegis.transforms.RandBenignShift` so that clean images from another pipeline pass.
        threshold_tnr: let the training attackers' threshold follow the deployed rule (see
            :class:`AdversarialShieldUpdate`; ``None``: the adversary's own fixed threshold).
        outliers, outlier_fraction: out-of-distribution negatives, e.g. :class:`~monai_aegis.transforms.RandOutlier`
            (see :class:`AdversarialShieldUpdate`; ``None``: none).
        persistent_starts: start each image's attack from its previous-epoch perturbation (see
            :class:`AdversarialShieldUpdate`).
        distributed: wrap the trained network in ``DistributedDataParallel`` (needs an initialised process group,
            e.g. under torchrun): Shield gradients are averaged over ranks, so every rank holds the same Shield.
            Give each rank its shard of the data (``DistributedSampler``).
        kwargs: passed to ``SupervisedTrainer`` (``train_handlers``, ``epoch_length``, ``amp``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        wrapper: AegisWrapper,
        optimizer: torch.optim.Optimizer,
        adversary: AdversaryFn | None = None,
        eps: float = DEFAULT_EPS_LINF,
        seed: int | None = 0,
        stats_batches: int = 4,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        threshold_tnr: float | None = None,
        outliers: Callable[[torch.Tensor], torch.Tensor] | None = None,
        outlier_fraction: float = 0.25,
        persistent_starts: bool = False,
        distributed: bool = False,
        **kwargs: Any,
    ) -> None:
        if wrapper.shield is None:
            raise ValueError("ShieldTrainer needs an AegisWrapper with a Shield.")
        freeze(wrapper.classifier)
        if wrapper.cushion is not None:
            freeze(wrapper.cushion)
        if adversary is None:
            from .adversary import ShieldAdversary

            adversary = ShieldAdversary(wrapper)
        kwargs.setdefault("decollate", False)
        if "key_train_metric" not in kwargs:
            kwargs["key_train_metric"] = {"detection_acc": Accuracy(output_transform=_detection_accuracy_output)}
        network: nn.Module = ShieldScorer(wrapper).to(device)
        if distributed:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise RuntimeError("ShieldTrainer(distributed=True) needs an initialised process group (torchrun).")
            ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        update = AdversarialShieldUpdate(adversary, wrapper.shield.num_classes, eps, seed=seed, augment=augment,
                                         threshold_tnr=threshold_tnr, outliers=outliers,
                                         outlier_fraction=outlier_fraction, persistent_starts=persistent_starts)
        self._shield_update = update  # before the handlers attach (a TrainingCheckpoint asks for it)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=ShieldLoss(),
            iteration_update=update,
            **kwargs,
        )
        self.state_dict_user_keys.extend(["best_metric", "best_metric_epoch"])  # a resumed run keeps its best so far
        self.wrapper = wrapper
        self.seed = seed
        self.stats_batches = int(stats_batches)
        self.add_event_handler(Events.STARTED, self._seed_fresh_run)
        if self.stats_batches > 0:
            self.add_event_handler(Events.STARTED, self._fit_input_stats)

    @property
    def shield_update(self) -> AdversarialShieldUpdate:
        """The iteration update (its target draw, augmentation and running threshold are part of a checkpoint)."""
        return self._shield_update

    def checkpoint_objects(self) -> dict[str, Any]:
        """The trainer's own stateful parts beyond the engine state, for
        :class:`~monai_aegis.handlers.TrainingCheckpoint`."""
        return {"shield_update": self.shield_update}

    def _seed_fresh_run(self, engine: Any) -> None:
        """Seed torch's global RNG (the attackers' random starts) at the start of a fresh run, so the run does not
        depend on what drew from it before (e.g. whether the classifier was trained or loaded). A resumed run
        restores it from the checkpoint instead."""
        if self.seed is not None and engine.state.epoch == 0 and engine.state.iteration == 0:
            torch.manual_seed(int(self.seed))

    @torch.no_grad()
    def _fit_input_stats(self, engine: Any) -> None:
        if engine.state.epoch > 0 or engine.state.iteration > 0:  # resumed from a checkpoint: keep saved stats
            return
        feats: dict[str, list[torch.Tensor]] = {}
        for i, batch in enumerate(self.data_loader):
            if i >= self.stats_batches:
                break
            x, _ = self.prepare_batch(batch, self.state.device, self.non_blocking, **self.to_kwargs)
            f = self.wrapper.shield_features(convert_to_tensor(x, track_meta=False))
            for k, v in f.items():
                feats.setdefault(k, []).append(v.detach())
        if feats:
            self.wrapper.shield.fit_input_stats({k: torch.cat(v) for k, v in feats.items()})
        if isinstance(self.network, nn.parallel.DistributedDataParallel):  # every rank uses rank 0's statistics
            import torch.distributed as dist

            for buf in self.wrapper.shield.buffers():
                dist.broadcast(buf, 0)
