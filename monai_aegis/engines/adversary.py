# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The training-time attacker of the Shield, built on :mod:`monai_aegis.attacks`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.utils import look_up_option

from ..attacks import (
    PGD,
    CrossEntropy,
    DetectorGate,
    DetectorLogit,
    JointAPGD,
    OrthogonalPGD,
    SelectivePGD,
    WhiteBox,
)
from ..networks.nets.aegis import AegisWrapper

__all__ = ["SHIELD_ADVERSARIES", "SHIELD_NEGATIVES", "ShieldAdversary"]

#: Training attackers: ``shield_pgd`` is the paper's (PGD maximising ``S_t`` only, Eq. 3); ``wb`` adds the
#: targeted CW term on the classifier (the WB attack), so negatives also flip the prediction; ``spgd``/``opgd``
#: are Bryniarski et al.'s selective / orthogonal PGD with the detector's decision at logit 0 (probability 0.5);
#: ``pgd`` is a detector-unaware targeted PGD (cross-entropy: it drives deep into the target class) on the classifier,
#: the attack most users meet; ``apgd_joint`` is the worst-case evaluation's strongest member, APGD on the joint
#: margin (classifier CW margin + ``lam`` x detector margin at the training threshold).
SHIELD_ADVERSARIES = ("shield_pgd", "wb", "spgd", "opgd", "pgd", "apgd_joint")

#: which iterate becomes the negative: ``"objective"`` (the attack's own choice: its last or highest-objective
#: iterate) or ``"accepted"`` (each attacker ranks its iterates by "fooled and accepted" at the training threshold,
#: as the worst-case evaluation judges them, so the negative is the point that beats the current Shield)
SHIELD_NEGATIVES = ("objective", "accepted")


class ShieldAdversary:
    """Crafts the Shield's negatives: L-inf attacks from images of other classes towards class ``target``,
    against the *current* Shield, through the wrapper's Cushion with BPDA (Aegis mode, Eq. 4).

    Called as ``adversary(x, y, target, eps)`` by :class:`~monai_aegis.engines.AdversarialShieldUpdate`; returns
    the :class:`~monai_aegis.attacks.AttackResult`. With several ``attacks`` the batch is split between them in
    equal contiguous shares, so one run can mix, e.g., the paper's PGD with the WB attacker.

    Args:
        wrapper: the :class:`AegisWrapper` (classifier, Shield, layers, Cushion) being trained.
        attacks: one name of :data:`SHIELD_ADVERSARIES` or a list of them.
        steps: attack steps per batch.
        step_size: step size as a fraction of ``eps`` per step, ``alpha = step_size * eps``; default ``2.5 / steps``.
        random_start: start from a uniform random point of the ball.
        detector_weight: weight of the Shield logit in ``wb``.
        kappa: CW confidence of the classifier term (``wb``, ``spgd``, ``opgd`` use CW margins).
        threshold: Shield acceptance threshold (logit; a float or a ``(num_classes,)`` tensor) of the gated
            attackers (``spgd``, ``opgd``, ``apgd_joint``, and all of them with ``negatives="accepted"``). The
            trainer may move it during training (:class:`~monai_aegis.engines.AdversarialShieldUpdate`'s
            ``threshold_tnr``) so that it follows the deployed rule.
        clip: valid input range.
        lam: detector-margin weight of ``apgd_joint``.
        negatives: one of :data:`SHIELD_NEGATIVES`.
    """

    def __init__(
        self,
        wrapper: AegisWrapper,
        attacks: str | Sequence[str] = "shield_pgd",
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        detector_weight: float = 1.0,
        kappa: float = 0.0,
        threshold: float | torch.Tensor = 0.0,
        clip: Sequence[float] = (0.0, 1.0),
        lam: float = 0.3,
        negatives: str = "objective",
    ) -> None:
        if wrapper.shield is None:
            raise ValueError("ShieldAdversary needs an AegisWrapper with a Shield.")
        names = [attacks] if isinstance(attacks, str) else list(attacks)
        if not names:
            raise ValueError("attacks must name at least one training attacker.")
        self.attacks = [look_up_option(str(n).lower(), SHIELD_ADVERSARIES) for n in names]
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        self.wrapper = wrapper
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.random_start = bool(random_start)
        self.detector_weight = float(detector_weight)
        self.kappa = float(kappa)
        self.threshold = threshold if isinstance(threshold, torch.Tensor) else float(threshold)
        self.clip = tuple(float(c) for c in clip)
        self.lam = float(lam)
        self.negatives = look_up_option(str(negatives).lower(), SHIELD_NEGATIVES)

    def build(self, name: str, eps: float) -> Any:
        """The attack object of training attacker ``name`` at budget ``eps``."""
        w = self.wrapper
        common: dict[str, Any] = {
            "eps": float(eps),
            "steps": self.steps,
            "random_start": self.random_start,
            "clip": self.clip,
            "preprocess": w.cushion,
            "amp": getattr(w, "amp", None),
        }
        if name == "apgd_joint":  # APGD sets its own step size (2 eps, halved on plateaus)
            return JointAPGD(w.classifier, w.shield, threshold=self.threshold, lam=self.lam,
                             layer_names=w.layer_names, **common)
        common["step_size"] = None if self.step_size is None else self.step_size * float(eps)
        if self.negatives == "accepted" and name in ("shield_pgd", "pgd", "wb"):
            common["detector_gate"] = DetectorGate(w.shield, self.threshold, w.layer_names)
            common["keep_best"] = True
        if name == "shield_pgd":
            return PGD(w.classifier, objective=DetectorLogit(w.shield, w.layer_names), **common)
        if name == "pgd":
            return PGD(w.classifier, objective=CrossEntropy(), **common)
        if name == "wb":
            return WhiteBox(w.classifier, w.shield, detector_weight=self.detector_weight, kappa=self.kappa,
                            layer_names=w.layer_names, **common)
        cls = SelectivePGD if name == "spgd" else OrthogonalPGD
        return cls(w.classifier, w.shield, threshold=self.threshold, loss="cw", kappa=self.kappa,
                   layer_names=w.layer_names, **common)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, eps: float,
                 start: torch.Tensor | None = None) -> Any:
        """Attack ``x`` towards ``target`` within ``eps``; ``start``: optional starting points (shaped like ``x``,
        replacing the random start; e.g. the previous epoch's perturbations)."""
        if len(self.attacks) == 1:
            return self.build(self.attacks[0], eps)(x, y, target=target, start=start)
        chunks = torch.arange(x.shape[0]).tensor_split(len(self.attacks))
        x_adv = torch.empty_like(x)
        success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for name, idx in zip(self.attacks, chunks):
            if idx.numel() == 0:
                continue
            idx = idx.to(x.device)
            res = self.build(name, eps)(x[idx], y[idx], target=target[idx],
                                        start=None if start is None else start[idx])
            x_adv[idx] = res.x_adv
            success[idx] = res.success
        return _Crafted(x_adv, success)

    def __repr__(self) -> str:
        return (f"ShieldAdversary(attacks={self.attacks}, steps={self.steps}, step_size={self.step_size}, "
                f"random_start={self.random_start}, negatives={self.negatives!r})")


class _Crafted:
    """Minimal result of a mixed adversary: the adversarial batch and per-sample classifier success."""

    def __init__(self, x_adv: torch.Tensor, success: torch.Tensor) -> None:
        self.x_adv = x_adv
        self.success = success
