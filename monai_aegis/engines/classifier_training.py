# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Training the classifier: from scratch (:func:`train_classifier`, the bundles' recipe) and adversarially (PGD-AT,
Madry et al. 2018; TRADES, Zhang et al. 2019) as a fine-tuning of a clean classifier, both on a MONAI
``SupervisedTrainer`` with one batch preparation and one class-balancing rule.

The standard robust baseline, and the option for a hospital that may retrain its model: the only defence mechanism
that has survived adaptive evaluation. Each iteration crafts an L-inf attack on the *current* classifier (in eval
mode, as the reference implementations do), then takes one optimiser step in train mode on

* ``"pgd"``: ``CE(f(x_adv), y)`` with ``x_adv`` the untargeted PGD maximiser of the cross-entropy (optionally mixed
  with the clean loss, ``clean_weight``);
* ``"trades"``: ``CE(f(x), y) + beta * KL(f(x) || f(x_adv))`` with ``x_adv`` the PGD maximiser of the KL term.

The budget is read per epoch from ``engine.state.eps`` (an :class:`~monai_aegis.handlers.EpsilonScheduler`), so a
ramp and a hold at the final eps are one handler.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.utils import convert_to_tensor, look_up_option
from torch import nn

from ..attacks import PGD, CrossEntropy, Objective
from ..attacks.engine import CHANNELS_LAST_MIN_AREA
from ..utils.batches import iter_batches
from ..utils.validation import check_labels

__all__ = [
    "ADVERSARIAL_TRAINING_METHODS",
    "AdversarialClassifierUpdate",
    "TradesKL",
    "accuracy",
    "adversarially_finetune",
    "balanced_class_weights",
    "prepare_image_label",
    "train_classifier",
]

ADVERSARIAL_TRAINING_METHODS = ("pgd", "trades")


class TradesKL(Objective):
    """TRADES' inner objective: ``KL(p(x) || p(x'))`` per sample, with ``p(x)`` the clean softmax (fixed at
    :meth:`bind`). Maximised by the attack; untargeted."""

    def __init__(self) -> None:
        self._clean_log_p: torch.Tensor | None = None

    def bind(self, forward: Any, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> Objective:
        with torch.no_grad():
            logits, _ = forward(x0)
        bound = copy.copy(self)
        bound._clean_log_p = F.log_softmax(logits.detach().float(), dim=1)
        return bound

    def __call__(self, logits: torch.Tensor, features: Any, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        if self._clean_log_p is None:
            raise RuntimeError("TradesKL is used unbound; the attack calls bind() with the clean images first.")
        log_q = F.log_softmax(logits, dim=1)
        return F.kl_div(log_q, self._clean_log_p, reduction="none", log_target=True).sum(1)


class AdversarialClassifierUpdate:
    """``iteration_update`` of a MONAI ``SupervisedTrainer`` for adversarial training of its ``network``.

    Args:
        method: ``"pgd"`` or ``"trades"`` (see the module docstring).
        eps: budget when ``engine.state.<eps_attr>`` is unset.
        steps: attack steps (step size ``2.5 eps / steps``, random start).
        beta: TRADES' weight of the robustness term.
        clean_weight: PGD-AT only: weight of the clean cross-entropy mixed into the loss (0: adversarial only).
        preprocess: optional stage before the classifier that both the attack and the training go through (e.g. a
            Cushion, crossed by the attack with its BPDA backward).
        class_weight: optional per-class weights of the cross-entropy.
        freeze_norm: keep normalisation layers (BatchNorm & co.) in eval mode while training, so their running
            statistics -- those of the clean data the classifier was trained on -- are not overwritten by batches
            of adversarial images (with few images that collapses the eval-mode predictions); their affine
            parameters still train.
        eps_attr: engine state attribute holding the current budget.
    """

    def __init__(
        self,
        method: str = "trades",
        eps: float = 8 / 256,
        steps: int = 10,
        beta: float = 6.0,
        clean_weight: float = 0.0,
        preprocess: nn.Module | None = None,
        class_weight: torch.Tensor | None = None,
        freeze_norm: bool = True,
        eps_attr: str = "eps",
    ) -> None:
        self.method = look_up_option(str(method).lower(), ADVERSARIAL_TRAINING_METHODS)
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        if float(eps) <= 0 or float(beta) < 0 or float(clean_weight) < 0:
            raise ValueError("eps must be > 0, and beta and clean_weight >= 0.")
        self.eps, self.steps, self.beta = float(eps), int(steps), float(beta)
        self.clean_weight = float(clean_weight)
        self.preprocess = preprocess
        self.class_weight = class_weight
        self.freeze_norm = bool(freeze_norm)
        self.eps_attr = eps_attr

    def _train_mode(self, network: nn.Module) -> None:
        network.train()
        if self.freeze_norm:
            for m in network.modules():
                if isinstance(m, nn.modules.batchnorm._NormBase):
                    m.eval()

    def _forward(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return network(x if self.preprocess is None else self.preprocess(x))

    def __call__(self, engine: Any, batchdata: Any) -> dict:
        x, y = labelled_batch(engine, batchdata, "adversarial training")
        x = x.float()
        eps = float(getattr(engine.state, self.eps_attr, None) or self.eps)
        network = engine.network
        objective = TradesKL() if self.method == "trades" else CrossEntropy()
        attack = PGD(network, eps=eps, steps=self.steps, objective=objective, preprocess=self.preprocess,
                     memory_format="preserve")
        network.eval()
        x_adv = attack(x, y).x_adv.detach()  # untargeted
        self._train_mode(network)
        weight = None if self.class_weight is None else self.class_weight.to(x.device)
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        if self.method == "trades":
            logits = self._forward(network, x)
            adv_logits = self._forward(network, x_adv)
            robust = F.kl_div(F.log_softmax(adv_logits, 1), F.log_softmax(logits, 1), reduction="batchmean",
                              log_target=True)
            loss = F.cross_entropy(logits, y, weight=weight) + self.beta * robust
        else:
            adv_logits = self._forward(network, x_adv)
            loss = F.cross_entropy(adv_logits, y, weight=weight)
            logits = adv_logits
            if self.clean_weight:
                logits = self._forward(network, x)
                loss = loss + self.clean_weight * F.cross_entropy(logits, y, weight=weight)
        loss.backward()
        engine.optimizer.step()
        return {"image": x, "label": y, "pred": adv_logits.detach(), "loss": loss.detach(), "eps": eps,
                "adv_accuracy": float((adv_logits.argmax(1) == y).float().mean())}


def prepare_image_label(batch: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> tuple:
    """``prepare_batch`` of the classifier trainers: ``(image, label)`` of a ``{"image", "label"}`` batch, labels
    flattened to ``(B,)`` int64, both on ``device``."""
    return (torch.as_tensor(batch["image"]).to(device, non_blocking=non_blocking),
            torch.as_tensor(batch["label"]).reshape(-1).long().to(device, non_blocking=non_blocking))


def labelled_batch(engine: Any, batchdata: Any, purpose: str, num_classes: int | None = None) -> tuple:
    """``(images, labels)`` of an Ignite engine's batch for an iteration update: ``engine.prepare_batch`` on the
    engine's device, images as a plain tensor (no ``MetaTensor`` overhead on every attack step), labels checked and
    flattened to ``(B,)`` on the images' device.

    Raises:
        ValueError: no batch, or a batch without labels (naming ``purpose``), or labels out of range.
    """
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    x, y = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    if y is None:
        raise ValueError(f"{purpose} needs class labels in the batch ('label').")
    x = convert_to_tensor(x, track_meta=False)
    y = check_labels(torch.as_tensor(y).reshape(x.shape[0], -1)[:, 0], x.shape[0], num_classes, "label")
    return x, y.to(x.device)


class _LayoutChoice:
    """``prepare_batch`` that puts batches (and, once, the network) in the memory layout ``memory_format`` asks for
    (see :func:`train_classifier`). The network's parameters are converted in place, so an optimizer built on them
    keeps working."""

    def __init__(self, network: nn.Module, memory_format: str = "auto") -> None:
        if memory_format not in ("auto", "channels_last", "preserve"):
            raise ValueError(f"memory_format must be 'auto', 'channels_last' or 'preserve', got {memory_format!r}.")
        self.network = network
        self.channels_last: bool | None = None if memory_format == "auto" else memory_format == "channels_last"
        self._converted = False

    def prepare_batch(self, batch: Any, device: Any = None, non_blocking: bool = False, **kwargs: Any) -> tuple:
        x, y = prepare_image_label(batch, device, non_blocking, **kwargs)
        if self.channels_last is None:  # "auto": decided by the first batch, with the attacks' size rule
            self.channels_last = x.ndim == 4 and x.shape[-2] * x.shape[-1] >= CHANNELS_LAST_MIN_AREA
        if self.channels_last and x.ndim == 4:
            if not self._converted:
                self.network.to(memory_format=torch.channels_last)
                self._converted = True
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def balanced_class_weights(network: nn.Module, loader: Any, device: Any = "cpu") -> torch.Tensor:
    """Cross-entropy weights ``N / (K * n_k)`` from the labels of ``loader`` (medical sets are rarely balanced), one
    per output of ``network`` -- a class absent from the loader gets the weight of a class seen once."""
    labels, first = [], None
    for x, y in iter_batches(loader, labels=True):
        first = x if first is None else first
        labels.append(torch.as_tensor(y).reshape(-1).long())
    if first is None:
        raise ValueError("the training loader yielded no batches.")
    was_training = network.training
    with torch.no_grad():
        num_classes = int(network.eval()(torch.as_tensor(first[:1]).to(device)).shape[1])
    network.train(was_training)
    counts = torch.bincount(torch.cat(labels), minlength=num_classes).float().clamp_min(1)
    return (counts.sum() / (len(counts) * counts)).to(device)


@torch.no_grad()
def accuracy(model: nn.Module, loader: Any, device: Any = "cpu") -> float:
    """Top-1 accuracy of ``model`` over a loader of ``{"image", "label"}`` batches."""
    model.eval()
    correct = total = 0
    for x, y in iter_batches(loader, labels=True):
        x, y = torch.as_tensor(x).to(device), torch.as_tensor(y).reshape(-1).to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("accuracy: the loader yielded no images.")
    return correct / total


def train_classifier(
    network: nn.Module,
    train_loader: Any,
    epochs: int = 10,
    lr: float = 1e-3,
    device: Any = "cpu",
    val_loader: Any = None,
    class_weights: bool = True,
    amp: bool | str | None = False,
    memory_format: str = "auto",
) -> dict[str, Any]:
    """Train ``network`` (from scratch, or fine-tune a pretrained one) with a MONAI ``SupervisedTrainer`` (AdamW,
    one-cycle learning rate, cross-entropy with balanced class weights: medical sets are rarely balanced).

    Args:
        amp: run the network in reduced precision (:func:`~monai_aegis.utils.resolve_amp`: bfloat16 autocast on a
            CPU that supports it, float16 AMP with loss scaling on CUDA); the loss stays in float32.
        memory_format: ``"channels_last"`` trains in NHWC (network and batches), ``"preserve"`` as given;
            ``"auto"`` (default) picks channels-last for 2-D batches of at least 128 x 128 pixels in area (the
            attacks' rule, :data:`~monai_aegis.attacks.engine.CHANNELS_LAST_MIN_AREA`), where CPU
            convolutions gain most (EfficientNet-Lite0 at 224 px, batch 32: 2.3x on this project's 2-core CPU) --
            decided at the first batch. The network is handed back in the standard layout.

    Returns:
        ``{"epochs", "loss", "val_accuracy"?}``.
    """
    from ignite.engine import Events

    from ..utils.precision import AutocastInferer, resolve_amp

    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    network.to(device)
    dtype = resolve_amp(amp, device)
    weight = balanced_class_weights(network, train_loader, device) if class_weights else None
    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    steps = int(epochs) * len(train_loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    on_cuda = torch.device(device).type == "cuda"
    precision: dict[str, Any] = {}
    if dtype is not None and on_cuda:  # MONAI's AMP: autocast + GradScaler
        precision = {"amp": True, "amp_kwargs": {"dtype": dtype}}
    elif dtype is not None:
        precision = {"inferer": AutocastInferer(device, dtype)}
    layout = _LayoutChoice(network, memory_format)
    trainer = SupervisedTrainer(
        device=device, max_epochs=int(epochs), train_data_loader=train_loader, network=network, optimizer=opt,
        loss_function=nn.CrossEntropyLoss(weight=weight), decollate=False,
        prepare_batch=layout.prepare_batch, **precision,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: sched.step())
    try:
        trainer.run()
    finally:
        network.to(memory_format=torch.contiguous_format)
    loss = float(torch.as_tensor(trainer.state.output["loss"]).detach())
    info: dict[str, Any] = {"epochs": int(epochs), "loss": loss,
                            "amp": None if dtype is None else str(dtype).removeprefix("torch.")}
    if val_loader is not None:
        info["val_accuracy"] = accuracy(network, val_loader, device)
    network.eval()
    return info


def adversarially_finetune(
    network: nn.Module,
    train_loader: Any,
    eps: float = 8 / 256,
    epochs: int = 10,
    steps: int = 10,
    lr: float = 1e-4,
    method: str = "trades",
    beta: float = 6.0,
    clean_weight: float = 0.0,
    ramp_epochs: int | None = None,
    device: Any = "cpu",
    preprocess: nn.Module | None = None,
    class_weights: bool = True,
    freeze_norm: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``network`` adversarially in place (AdamW, constant learning rate).

    Args:
        network: the (usually clean-trained) classifier.
        train_loader: ``{"image", "label"}`` batches.
        eps: final L-inf budget; the budget ramps linearly from ``eps / 4`` over ``ramp_epochs`` (default: half the
            epochs) and then holds at ``eps``.
        epochs, steps, lr: fine-tuning epochs, attack steps, learning rate.
        method, beta, clean_weight, preprocess, freeze_norm: see :class:`AdversarialClassifierUpdate`.
        class_weights: balance the cross-entropy by inverse class frequency.

    Returns:
        ``{"method", "eps", "epochs", "steps", "loss", "adv_accuracy"}`` (the last epoch's training figures).
    """
    from ignite.engine import Events

    from ..handlers import EpsilonScheduler

    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    network.to(device)
    weight = balanced_class_weights(network, train_loader, device) if class_weights else None
    update = AdversarialClassifierUpdate(method, eps, steps, beta, clean_weight, preprocess, weight, freeze_norm)
    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    trainer = SupervisedTrainer(
        device=device, max_epochs=int(epochs), train_data_loader=train_loader, network=network, optimizer=opt,
        loss_function=nn.CrossEntropyLoss(), iteration_update=update, decollate=False,
        prepare_batch=prepare_image_label,
    )
    ramp = max(1, int(epochs) // 2 if ramp_epochs is None else int(ramp_epochs))
    EpsilonScheduler(float(eps) / 4, float(eps), ramp_epochs=ramp).attach(trainer)
    adv_acc: list[float] = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: adv_acc.clear())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: adv_acc.append(e.state.output["adv_accuracy"]))
    trainer.run()
    network.eval()
    return {"method": update.method, "eps": float(eps), "epochs": int(epochs), "steps": int(steps),
            "loss": float(torch.as_tensor(trainer.state.output["loss"])),
            "adv_accuracy": sum(adv_acc) / max(1, len(adv_acc))}
