# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Named attacks of the Medical Aegis paper (and the strongest known detector attacks) as short presets of
:class:`~.engine.IterativeAttack`, plus the registry :func:`make_attack`.

Every preset takes plain arguments, so a MONAI bundle can build it directly
(``{"_target_": "monai_aegis.attacks.PGD", "model": "@network", "eps": 0.0625}``), and forwards any other keyword
(``preprocess``, ``eot_samples``, ``restarts``, ``detector_gate``, ``keep_best``, ...) to the loop.

Defaults (the paper's setting where it gives one, ours otherwise -- stated per preset):

============  ===============  =====  ==================  ============  ====================================
name          norm / eps       steps  step size           random start  parts
============  ===============  =====  ==================  ============  ====================================
FGSM          Linf 16/256      1      eps                 no            sign
BIM           Linf 16/256      20     2.5 eps / steps     no            sign
PGD           Linf 16/256      20     2.5 eps / steps     yes           sign
MIM           Linf 16/256      20     2.5 eps / steps     no            momentum mu = 1
DIM           Linf 16/256      20     2.5 eps / steps     no            momentum mu = 1, diversity p = 0.5
TIM           Linf 16/256      20     2.5 eps / steps     no            momentum mu = 1, Gaussian 15 px
CW-Linf       Linf 16/256      20     2.5 eps / steps     yes           CW margin (kappa = 0), sign
PGD-L2        L2 8/256         20     2.5 eps / steps     yes           unit-L2 step
CW-L2         unbounded        6x200  Adam lr 0.01        --            binary search over c (c0 = 0.1)
APGD-CE/CW    Linf 16/256      100    2 eps, auto-halved  yes (surf.)   heavy ball 0.75, checkpoints
APGD-Joint    Linf 16/256      100    2 eps, auto-halved  yes (surf.)   APGD on CW margin + lam x detector margin
Square        Linf 16/256      1000   window p = 0.8 ...  stripes       gradient-free, queries only (system margin)
Fea, HFC      Linf 16/256      100    2.5 eps / steps     yes           feature match / GMM prior
WB, WB_d      Linf 16/256      100    2.5 eps / steps     yes           detector logit + CW; WB_d x0.1 @50
SPGD, OPGD    Linf 16/256      100    2.5 eps / steps     yes           selective / orthogonal gradients
============  ===============  =====  ==================  ============  ====================================

``2.5 eps / steps`` is Madry et al.'s rule: ``eps / 8`` (= 2/256) for 20 steps, ``eps / 40`` for 100 steps.
Attacks are targeted when called with ``target=...`` and untargeted otherwise (the paper's are targeted).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .cw import CarliniWagnerL2
from .diversity import GradientSmoothing, InputDiversity
from .engine import Attack, AttackResult, IterativeAttack
from .objectives import (
    CrossEntropy,
    CWMargin,
    DetectorEvasion,
    DetectorGate,
    DetectorLogit,
    FeatureLikelihood,
    FeatureMatch,
    JointMargin,
    Objective,
)
from .steps import AutoStepSize, MomentumStep, StepDecay
from .threat import L2Ball, LinfBall, make_threat

__all__ = [
    "DEFAULT_EPS_LINF",
    "DEFAULT_EPS_L2",
    "FGSM",
    "BIM",
    "PGD",
    "MIM",
    "DIM",
    "TIM",
    "CWLinf",
    "PGDL2",
    "CWL2",
    "APGD",
    "JointAPGD",
    "FeatureSpaceAttack",
    "Fea",
    "HFC",
    "WhiteBox",
    "WB",
    "WhiteBoxDecay",
    "WB_d",
    "SelectivePGD",
    "OrthogonalPGD",
    "TransferAttack",
    "ATTACK_NAMES",
    "attack_key",
    "make_attack",
    "make_aegis_attack",
]

#: the paper's L-inf budget (16 grey levels of 256) and L2 budget
DEFAULT_EPS_LINF = 16 / 256
DEFAULT_EPS_L2 = 8 / 256

Clip = Sequence[float]


def _objective(loss: str | Objective, kappa: float | None = 0.0) -> Objective:
    if isinstance(loss, Objective):
        return loss
    key = str(loss).lower()
    if key == "ce":
        return CrossEntropy()
    if key == "cw":
        return CWMargin(kappa)
    raise ValueError(
        f"unknown loss {loss!r}; use 'ce', 'cw' or an Objective (DLR is not offered: it needs >= 3 classes)."
    )


class FGSM(IterativeAttack):
    """Fast gradient sign method (Goodfellow et al., 2015): one signed gradient step of size ``eps``."""

    def __init__(
        self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, clip: Clip = (0.0, 1.0),
        mask: torch.Tensor | None = None, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("step_rule", "sign")
        super().__init__(model, LinfBall(eps, clip, mask), steps=1, step_size=eps, **kwargs)


class BIM(IterativeAttack):
    """Basic iterative method (Kurakin et al., 2017): iterated FGSM from ``x``, projected onto the ball."""

    def __init__(
        self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, steps: int = 20, step_size: float | None = None,
        clip: Clip = (0.0, 1.0), mask: torch.Tensor | None = None, random_start: bool = False, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("step_rule", "sign")
        super().__init__(
            model, LinfBall(eps, clip, mask), steps=steps, step_size=step_size, random_start=random_start, **kwargs
        )


class PGD(BIM):
    """Projected gradient descent (Madry et al., 2018): BIM from a uniform random start in the ball."""

    def __init__(self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, random_start: bool = True, **kwargs: Any):
        super().__init__(model, eps=eps, random_start=random_start, **kwargs)


class MIM(BIM):
    """Momentum iterative method (MI-FGSM, Dong et al., 2018): sign of the accumulated L1-normalised gradient."""

    def __init__(self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, decay: float = 1.0, **kwargs: Any) -> None:
        kwargs.setdefault("step_rule", MomentumStep(decay))
        super().__init__(model, eps=eps, **kwargs)


class DIM(MIM):
    """Diverse-input MI-FGSM (M-DI2-FGSM, Xie et al., 2019): momentum plus random resize-and-pad of the input
    with probability ``diversity_prob``."""

    def __init__(
        self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, diversity_prob: float = 0.5,
        resize_rate: float = 0.9, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("input_diversity", InputDiversity(diversity_prob, resize_rate))
        super().__init__(model, eps=eps, **kwargs)


class TIM(MIM):
    """Translation-invariant MI-FGSM (Dong et al., 2019): momentum on the Gaussian-smoothed gradient.
    Set ``diversity_prob > 0`` for TI-DIM."""

    def __init__(
        self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, kernel_size: int = 15, nsig: float = 3.0,
        diversity_prob: float = 0.0, resize_rate: float = 0.9, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("grad_smoothing", GradientSmoothing(kernel_size, nsig))
        if diversity_prob > 0:
            kwargs.setdefault("input_diversity", InputDiversity(diversity_prob, resize_rate))
        super().__init__(model, eps=eps, **kwargs)


class CWLinf(PGD):
    """CW-Linf: PGD on the Carlini-Wagner margin loss (with confidence ``kappa``)."""

    def __init__(self, model: nn.Module, eps: float = DEFAULT_EPS_LINF, kappa: float = 0.0, **kwargs: Any) -> None:
        kwargs.setdefault("objective", CWMargin(kappa))
        super().__init__(model, eps=eps, **kwargs)


class PGDL2(IterativeAttack):
    """PGD in the L2 ball (eps 8/256 as in the paper's setting): unit-L2 steps, random start."""

    def __init__(
        self, model: nn.Module, eps: float = DEFAULT_EPS_L2, steps: int = 20, step_size: float | None = None,
        clip: Clip = (0.0, 1.0), mask: torch.Tensor | None = None, random_start: bool = True, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("step_rule", "l2")
        super().__init__(
            model, L2Ball(eps, clip, mask), steps=steps, step_size=step_size, random_start=random_start, **kwargs
        )


CWL2 = CarliniWagnerL2


class APGD(IterativeAttack):
    """Auto-PGD (Croce & Hein, ICML 2020) with the CE or the CW-margin loss, L-inf or L2.

    Step size ``2 eps`` controlled by :class:`~.steps.AutoStepSize` (halved at checkpoints where the loss
    oscillates or stalls, restarting from the best point), heavy-ball averaging of iterates with ``alpha = 0.75``,
    random start on the ball's surface, best iterate returned. Targeted with ``target=...`` (DLR is not offered:
    it needs at least three classes). ``restarts`` re-runs only the samples not yet successful.

    Args:
        norm: ``"Linf"`` or ``"L2"``.
        eps: defaults to 16/256 (L-inf) or 8/256 (L2).
        loss: ``"ce"`` or ``"cw"`` (the margin without a cap), or any Objective.
        rho: APGD's oscillation threshold.
    """

    def __init__(
        self, model: nn.Module, norm: str = "Linf", eps: float | None = None, loss: str | Objective = "ce",
        steps: int = 100, restarts: int = 1, rho: float = 0.75, clip: Clip = (0.0, 1.0),
        mask: torch.Tensor | None = None, **kwargs: Any,
    ) -> None:
        if eps is None:
            eps = DEFAULT_EPS_L2 if _key(norm) in ("l2", "2") else DEFAULT_EPS_LINF
        threat = make_threat(norm, eps, clip, mask)
        kwargs.setdefault("objective", _objective(loss, kappa=None))
        kwargs.setdefault("step_size", 2 * threat.eps)
        kwargs.setdefault("random_start", True)
        kwargs.setdefault("keep_best", True)
        kwargs.setdefault("random_start_surface", True)
        kwargs.setdefault("heavy_ball", 0.75)
        super().__init__(model, threat, steps=steps, restarts=restarts, schedule=AutoStepSize(rho), **kwargs)


class JointAPGD(APGD):
    """APGD on the joint objective of a classifier + detector system (:class:`~.objectives.JointMargin`): the
    classifier's CW margin plus ``lam`` x the detector margin of the attack class, each capped once satisfied, with
    iterates ranked by "fooled and accepted" at the detector's threshold(s). The adaptive attack of the
    worst-case evaluation beside WB / SPGD / OPGD; run it with several ``lam`` (the two margins have different
    scales).

    Args:
        detector: module mapping the features dict to ``(B, num_classes)`` clean logits (Shield).
        threshold: acceptance threshold(s): float or ``(num_classes,)`` tensor.
        lam: weight of the detector margin.
        kappa, detector_kappa: caps of the two margins.
        layer_names: default ``detector.layer_names``.
    """

    def __init__(
        self, model: nn.Module, detector: nn.Module, threshold: float | Sequence[float] | torch.Tensor = 0.0,
        lam: float = 1.0, kappa: float | None = 1.0, detector_kappa: float | None = 1.0,
        layer_names: Sequence[str] | str | None = None, **kwargs: Any,
    ) -> None:
        gate = DetectorGate(detector, threshold, layer_names)
        kwargs.setdefault("objective", JointMargin(gate, lam, kappa, detector_kappa))
        kwargs.setdefault("detector_gate", gate)
        super().__init__(model, **kwargs)


class FeatureSpaceAttack(PGD):
    """Fea: targeted feature-space attack -- make the hooked features of ``x`` match those of a clean image of the
    target class (:class:`~.objectives.FeatureMatch`).

    Args:
        guides: ``(num_classes, C, *spatial)`` one clean image per class (guide = image of the target class), or
            per-sample guides with ``per_class=False``.
        layer_names: classifier layers to match.
        pool: match pooled ``(B, C)`` features instead of feature maps.
    """

    def __init__(
        self, model: nn.Module, guides: torch.Tensor, layer_names: Sequence[str] | str,
        eps: float = DEFAULT_EPS_LINF, steps: int = 100, per_class: bool = True, pool: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("objective", FeatureMatch(layer_names, guides, per_class=per_class, pool=pool))
        super().__init__(model, eps=eps, steps=steps, **kwargs)


Fea = FeatureSpaceAttack


class HFC(PGD):
    """HFC: targeted attack plus ``lam`` x a feature prior -- minus the normalised Mahalanobis distance of each
    hooked layer's pooled features to the nearest component of the target class's Gaussian mixture
    (:class:`~.objectives.FeatureLikelihood`), so the adversarial features look like clean target-class ones.

    Args:
        feature_model: a fitted :class:`~.feature_model.GaussianFeatureModel` (its layers are hooked).
        lam: weight of the feature term.
        loss: classifier term, ``"ce"`` or ``"cw"``.
        kappa: CW confidence when ``loss="cw"``.
    """

    def __init__(
        self, model: nn.Module, feature_model: nn.Module, lam: float = 1.0, loss: str | Objective = "ce",
        kappa: float = 0.0, eps: float = DEFAULT_EPS_LINF, steps: int = 100, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("objective", _objective(loss, kappa) + float(lam) * FeatureLikelihood(feature_model))
        super().__init__(model, eps=eps, steps=steps, **kwargs)


class WhiteBox(PGD):
    """WB: the paper's white-box adaptive attack on Cushion + Shield, ``J = w * S_t[f(C(x))] + J_cw``: the
    detector's clean logit of the target class plus the CW margin of the classifier, both through the
    preprocessing stage (the Cushion, whose backward is BPDA).

    Args:
        detector: module mapping the classifier's features dict to ``(B, num_classes)`` clean logits (Shield).
        preprocess: the Cushion (``CushionLayer``) or any module to differentiate through.
        detector_weight: ``w``.
        kappa: CW confidence.
        threshold: optional acceptance threshold(s) of the detector; when given, iterates are ranked by
            "fooled and accepted" and the result reports ``accepted``.
        layer_names: classifier layers the detector reads; default ``detector.layer_names``.
    """

    def __init__(
        self, model: nn.Module, detector: nn.Module, preprocess: nn.Module | None = None,
        eps: float = DEFAULT_EPS_LINF, steps: int = 100, detector_weight: float = 1.0, kappa: float = 0.0,
        threshold: float | Sequence[float] | torch.Tensor | None = None,
        layer_names: Sequence[str] | str | None = None, **kwargs: Any,
    ) -> None:
        term = DetectorLogit(detector, layer_names)
        kwargs.setdefault("objective", float(detector_weight) * term + CWMargin(kappa))
        if threshold is not None:
            kwargs.setdefault("detector_gate", DetectorGate(detector, threshold, term.layer_names))
        super().__init__(model, eps=eps, steps=steps, preprocess=preprocess, **kwargs)


WB = WhiteBox


class WhiteBoxDecay(WhiteBox):
    """WB_d: :class:`WhiteBox` with the step size multiplied by ``decay_factor`` from step ``decay_at`` on."""

    def __init__(
        self, model: nn.Module, detector: nn.Module, decay_at: int = 50, decay_factor: float = 0.1, **kwargs: Any
    ) -> None:
        kwargs.setdefault("schedule", StepDecay(decay_at, decay_factor))
        super().__init__(model, detector, **kwargs)


WB_d = WhiteBoxDecay


class SelectivePGD(PGD):
    """Selective PGD (Bryniarski et al., ICLR 2022): per sample, step on the classifier loss until the classifier
    is fooled, then on the detector's clean logit (``switch_on="detector"``: step on the classifier while the
    detector accepts, on the detector otherwise). Success in the result is reported per classifier, and
    ``result.accepted`` gives the detector's verdict; iterates are ranked by "fooled and accepted".

    Args:
        detector: module mapping the features dict to ``(B, num_classes)`` clean logits.
        threshold: acceptance threshold(s): float or ``(num_classes,)`` tensor, in the detector's logit units.
        loss: classifier term (``"ce"`` or ``"cw"``).
        margin: classifier logit margin before switching to the detector (0.05, as the paper's code).
        layer_names: default ``detector.layer_names``.
    """

    mode = "selective"

    def __init__(
        self, model: nn.Module, detector: nn.Module, threshold: float | Sequence[float] | torch.Tensor = 0.0,
        loss: str | Objective = "ce", kappa: float = 0.0, eps: float = DEFAULT_EPS_LINF, steps: int = 100,
        switch_on: str = "classifier", margin: float = 0.05, layer_names: Sequence[str] | str | None = None,
        keep_best: bool = True, **kwargs: Any,
    ) -> None:
        gate = DetectorGate(detector, threshold, layer_names)
        kwargs.setdefault("objective", DetectorEvasion(_objective(loss, kappa), gate, self.mode, switch_on, margin))
        kwargs.setdefault("detector_gate", gate)
        super().__init__(model, eps=eps, steps=steps, keep_best=keep_best, **kwargs)


class OrthogonalPGD(SelectivePGD):
    """Orthogonal PGD (Bryniarski et al., ICLR 2022): as :class:`SelectivePGD`, but each step's gradient is first
    projected orthogonally to the other term's gradient (per sample)."""

    mode = "orthogonal"


class TransferAttack(Attack):
    """TF: craft adversarial examples with any attack on a substitute (source) model, judge them on ``model``.

    Args:
        model: the target model (success, logits and acceptance are measured on it).
        source_model: the substitute the attack sees (ignored when ``attack`` is an Attack instance).
        attack: a registry name (``"PGD"``, ``"MIM"``, ...) or an :class:`~.engine.Attack` on the source model.
        preprocess: the target's preprocessing stage (e.g. its Cushion), applied when judging.
        detector_gate: optional gate on the *target* model's features.
        **attack_kwargs: passed to :func:`make_attack` when ``attack`` is a name.

    ``result.info["source"]`` is the source attack's own :class:`~.engine.AttackResult`.
    """

    def __init__(
        self, model: nn.Module, source_model: nn.Module | None = None, attack: str | Attack = "PGD",
        preprocess: nn.Module | None = None, detector_gate: DetectorGate | None = None, **attack_kwargs: Any,
    ) -> None:
        if isinstance(attack, Attack):
            if attack_kwargs:
                raise ValueError("attack_kwargs are only used when `attack` is a name.")
            source = attack
        else:
            if source_model is None:
                raise ValueError("TransferAttack needs a source_model (the substitute the attack is crafted on).")
            if _key(attack) == "tf":
                raise ValueError("the source attack of a transfer attack cannot itself be 'TF'.")
            source = make_attack(attack, source_model, **attack_kwargs)
        super().__init__(model, preprocess=preprocess, clip=source.clip, detector_gate=detector_gate, amp=source.amp)
        self.source = source
        self.layer_names = detector_gate.layer_names if detector_gate is not None else ()

    def __repr__(self) -> str:
        return f"TransferAttack(source={self.source!r})"

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
    ) -> AttackResult:
        src = self.source.perturb(x, y, target, mask)
        with self._hooks(self.layer_names) as hooks, torch.no_grad():
            logits, feats = self._forward_fn(hooks, y, target)(src.x_adv)
            value = src.objective if src.objective is not None else torch.zeros_like(y, dtype=x.dtype)
            cand = self._candidate(src.x_adv, logits, feats, value, y, target)
        return self._result(x, cand, y, target, info={"source": src})


# ------------------------------------------------------------------------------------------------- registry
def _apgd_ce(model: nn.Module, **kw: Any) -> APGD:
    return APGD(model, **{"loss": "ce", **kw})


def _apgd_cw(model: nn.Module, **kw: Any) -> APGD:
    return APGD(model, **{"loss": "cw", **kw})


def _square(model: nn.Module, **kw: Any) -> Attack:
    from .square import SquareAttack  # imported here: square.py imports this module's defaults

    return SquareAttack(model, **kw)


_REGISTRY: dict[str, tuple[str, Callable[..., Attack]]] = {
    "fgsm": ("FGSM", FGSM),
    "bim": ("BIM", BIM),
    "pgd": ("PGD", PGD),
    "mim": ("MIM", MIM),
    "dim": ("DIM", DIM),
    "tim": ("TIM", TIM),
    "cwlinf": ("CW-Linf", CWLinf),
    "pgdl2": ("PGD-L2", PGDL2),
    "cwl2": ("CW-L2", CarliniWagnerL2),
    "tf": ("TF", TransferAttack),
    "fea": ("Fea", FeatureSpaceAttack),
    "hfc": ("HFC", HFC),
    "wb": ("WB", WhiteBox),
    "wbd": ("WB_d", WhiteBoxDecay),
    "spgd": ("SPGD", SelectivePGD),
    "opgd": ("OPGD", OrthogonalPGD),
    "apgdce": ("APGD-CE", _apgd_ce),
    "apgdcw": ("APGD-CW", _apgd_cw),
    "apgdjoint": ("APGD-Joint", JointAPGD),
    "square": ("Square", _square),
}

#: the registry's names, as the paper writes them
ATTACK_NAMES: tuple[str, ...] = tuple(name for name, _ in _REGISTRY.values())


def attack_key(name: str) -> str:
    """The registry key of an attack name: lower case without ``-``, ``_`` and spaces (``"WB_d"`` -> ``"wbd"``)."""
    return "".join(ch for ch in str(name).lower() if ch not in "-_ ")


_key = attack_key


def make_attack(name: str, model: nn.Module, **overrides: Any) -> Attack:
    """Build a named attack: ``make_attack("PGD", model, eps=8/256)``.

    Names (case-, dash- and underscore-insensitive): FGSM, BIM, PGD, MIM, DIM, TIM, CW-Linf, PGD-L2, CW-L2, TF,
    Fea, HFC, WB, WB_d, SPGD, OPGD, APGD-CE, APGD-CW, APGD-Joint, Square. Required extra arguments: ``TF``
    ``source_model``; ``Fea`` ``guides`` and ``layer_names``; ``HFC`` ``feature_model``;
    ``WB``/``WB_d``/``SPGD``/``OPGD``/``APGD-Joint`` ``detector``.

    Raises:
        ValueError: for an unknown name (with close matches).
    """
    key = _key(name)
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(_REGISTRY[c][0]) for c in close)}?" if close else ""
        raise ValueError(f"unknown attack {name!r}.{hint} Available: {', '.join(ATTACK_NAMES)}.")
    return _REGISTRY[key][1](model, **overrides)


#: attacks that take the detector itself (the others get it as a ``detector_gate`` for judging only)
_DETECTOR_ATTACKS = ("wb", "wbd", "spgd", "opgd", "apgdjoint")


def make_aegis_attack(name: str, aegis: nn.Module, **overrides: Any) -> Attack:
    """Build a named attack on a defended model (an :class:`~monai_aegis.networks.AegisWrapper`): the attack
    sees the classifier through the wrapper's Cushion (``preprocess``, differentiated with its BPDA backward) and in
    the wrapper's precision (``amp``);
    WB, WB_d, SPGD, OPGD and APGD-Joint also attack its Shield with the wrapper's reject threshold; every other
    attack gets the Shield as a ``detector_gate``, so its result reports ``accepted`` and ``success_undetected``
    (for Square, the gate also defines its loss: the system's "fooled and accepted" margin).

    Args:
        name: a registry name (see :func:`make_attack`).
        aegis: an object with ``classifier``, ``cushion``, ``shield`` and ``threshold`` attributes.
        **overrides: passed on (they win over the wrapper's parts).

    Raises:
        ValueError: for an unknown name, or a detector attack on a wrapper without Shield or threshold.
    """
    key = _key(name)
    shield = getattr(aegis, "shield", None)
    thr = getattr(aegis, "threshold", None)
    thr = None if thr is None or (isinstance(thr, torch.Tensor) and thr.numel() == 0) else thr
    kw: dict[str, Any] = {"preprocess": getattr(aegis, "cushion", None), "amp": getattr(aegis, "amp", None)}
    if key in _DETECTOR_ATTACKS:
        if shield is None or thr is None:
            raise ValueError(f"{name} attacks the Shield: the wrapper needs a Shield and a threshold (calibrate it).")
        kw.update(detector=shield, threshold=thr)
    elif shield is not None and thr is not None:
        kw["detector_gate"] = DetectorGate(shield, thr)
    kw.update(overrides)
    return make_attack(name, aegis.classifier, **kw)
