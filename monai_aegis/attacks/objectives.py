# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Attack objectives: per-sample values the attacker **maximises**.

Convention (used by every objective and by the attack loop):

* the attack is *targeted* when a ``target`` tensor is passed, *untargeted* when ``target`` is ``None``;
* every objective returns a ``(B,)`` tensor that the attacker increases. Targeted cross-entropy is therefore
  ``-CE(logits, target)``, untargeted ``+CE(logits, y)``; the CW margin is ``Z_t - max_{j != t} Z_j``
  (targeted) or ``max_{j != y} Z_j - Z_y`` (untargeted), capped at ``kappa``;
* objectives that need a class other than the classifier's (the detector's class, the feature model's class)
  use the target class when targeted, else the classifier's current prediction (``argmax``, no gradient).

Objectives combine linearly: ``CrossEntropy() + 0.5 * DetectorLogit(shield)`` is a :class:`WeightedSum`.
An objective declares the classifier layers it reads in :attr:`Objective.layer_names`; the attack hooks
exactly the union of those (with :class:`monai_aegis.networks.FeatureHooks`), and none when it is empty.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics.detection import accept_mask, check_threshold, per_sample_threshold
from ..networks import pool_features
from ..utils import check_positive

__all__ = [
    "Objective",
    "WeightedSum",
    "CrossEntropy",
    "CWMargin",
    "FeatureMatch",
    "DetectorLogit",
    "FeatureLikelihood",
    "DetectorGate",
    "DetectorEvasion",
    "JointMargin",
    "MultiGradientObjective",
    "attack_classes",
    "classifier_margin",
    "is_success",
]

Features = Mapping[str, torch.Tensor]
#: ``forward(x) -> (logits, features)`` through the preprocessing stage and the classifier, hooks attached.
ForwardFn = Callable[[torch.Tensor], "tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]"]


def attack_classes(logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """The class an objective acts for: ``target`` when targeted, else the current prediction."""
    return target if target is not None else logits.detach().argmax(dim=1)


def is_success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, margin: float = 0.0) -> torch.Tensor:
    """``(B,)`` bool: prediction == target (targeted) or != y (untargeted).

    With ``margin > 0`` the true class's logit is first raised by ``margin``, so only samples that beat it
    by more than the margin count (Bryniarski et al. use 0.05).
    """
    logits = logits.detach()
    if margin:
        logits = logits.scatter_add(1, y[:, None], torch.full_like(logits[:, :1], margin))
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y


def classifier_margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """``(B,)`` Carlini-Wagner margin, positive exactly when the attack succeeds on the classifier:
    ``Z_t - max_{j != t} Z_j`` (targeted) or ``max_{j != y} Z_j - Z_y`` (untargeted)."""
    cls = target if target is not None else y
    own = logits.gather(1, cls[:, None])[:, 0]
    other = logits.scatter(1, cls[:, None], float("-inf")).amax(dim=1)
    return own - other if target is not None else other - own


def _union(names: Sequence[Sequence[str]]) -> tuple[str, ...]:
    out: list[str] = []
    for group in names:
        for n in group:
            if n not in out:
                out.append(n)
    return tuple(out)


class Objective:
    """Base class. Subclasses implement ``__call__(logits, features, y, target) -> (B,)``.

    Attributes:
        layer_names: classifier sub-modules whose outputs the objective reads from ``features``.
    """

    layer_names: tuple[str, ...] = ()

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def bind(self, forward: ForwardFn, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> Objective:
        """Per-attack preparation (e.g. the guide image's features); returns the objective to use for this
        batch. The default returns ``self``."""
        return self

    def networks(self) -> list[nn.Module]:
        """Modules the objective runs (detectors); the attack puts them in eval mode and restores them."""
        return []

    # linear combinations --------------------------------------------------------------------------------------
    def __add__(self, other: Objective) -> WeightedSum:
        if not isinstance(other, Objective):
            return NotImplemented
        return WeightedSum([(1.0, self), (1.0, other)])

    def __sub__(self, other: Objective) -> WeightedSum:
        if not isinstance(other, Objective):
            return NotImplemented
        return WeightedSum([(1.0, self), (-1.0, other)])

    def __mul__(self, weight: float) -> WeightedSum:
        if isinstance(weight, Objective) or not isinstance(weight, (int, float)):
            return NotImplemented
        return WeightedSum([(float(weight), self)])

    __rmul__ = __mul__

    def __neg__(self) -> WeightedSum:
        return WeightedSum([(-1.0, self)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class WeightedSum(Objective):
    """``sum_i w_i * J_i``. Built by ``a * J1 + b * J2``; nested sums are flattened.

    Args:
        terms: ``(weight, objective)`` pairs.
    """

    def __init__(self, terms: Sequence[tuple[float, Objective]]) -> None:
        flat: list[tuple[float, Objective]] = []
        for w, obj in terms:
            if not isinstance(obj, Objective):
                raise TypeError(f"WeightedSum terms must be Objectives, got {type(obj).__name__}.")
            if isinstance(obj, MultiGradientObjective):
                raise TypeError(f"{type(obj).__name__} chooses its own gradients and cannot be summed.")
            if isinstance(obj, WeightedSum):
                flat += [(float(w) * w2, o2) for w2, o2 in obj.terms]
            else:
                flat.append((float(w), obj))
        if not flat:
            raise ValueError("WeightedSum needs at least one term.")
        self.terms = flat
        self.layer_names = _union([o.layer_names for _, o in flat])

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        out = None
        for w, obj in self.terms:
            v = obj(logits, features, y, target)
            v = v if w == 1.0 else w * v
            out = v if out is None else out + v
        return out  # type: ignore[return-value]

    def bind(self, forward: ForwardFn, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> Objective:
        bound = [(w, o.bind(forward, x0, y, target)) for w, o in self.terms]
        if all(b is o for (_, b), (_, o) in zip(bound, self.terms)):
            return self
        return WeightedSum(bound)

    def networks(self) -> list[nn.Module]:
        return [m for _, o in self.terms for m in o.networks()]

    def __repr__(self) -> str:
        return " + ".join(f"{w:g} * {o!r}" for w, o in self.terms)


class CrossEntropy(Objective):
    """``-CE(logits, target)`` (targeted) or ``CE(logits, y)`` (untargeted), per sample."""

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if target is not None:
            return -F.cross_entropy(logits, target, reduction="none")
        return F.cross_entropy(logits, y, reduction="none")


class CWMargin(Objective):
    """Carlini-Wagner margin: ``min(Z_t - max_{j != t} Z_j, kappa)`` (targeted) or
    ``min(max_{j != y} Z_j - Z_y, kappa)`` (untargeted) on the logits ``Z``.

    Args:
        kappa: confidence cap (>= 0); once the margin exceeds it the objective is flat. ``None`` for no cap
            (APGD-CW, where the margin is a loss to grow without bound).
    """

    def __init__(self, kappa: float | None = 0.0) -> None:
        self.kappa = None if kappa is None else check_positive(kappa, "kappa", allow_zero=True)

    def margin(self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        return classifier_margin(logits, y, target)

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        m = self.margin(logits, y, target)
        return m if self.kappa is None else m.clamp_max(self.kappa)

    def __repr__(self) -> str:
        return f"CWMargin(kappa={self.kappa})"


class FeatureMatch(Objective):
    """Feature-space attack (Fea): pull the hooked features of ``x`` towards those of a clean guide image.

    ``J = -mean_l ||f_l(x) - f_l(g)||^2 / ||f_l(g)||^2`` (squared distance normalised per layer by the guide's
    energy, so deep and shallow layers weigh alike).

    Args:
        layer_names: classifier layers to match.
        guides: ``(num_classes, C, *spatial)`` -- one clean image per class, the guide of a sample is the image of
            its target class (``per_class=True``, targeted attacks only) -- or ``(B, C, *spatial)`` / ``(1, C,
            *spatial)`` per-sample guides (``per_class=False``).
        per_class: how ``guides`` is indexed (see above).
        pool: match globally average-pooled ``(B, C)`` features instead of whole feature maps.
    """

    def __init__(
        self, layer_names: Sequence[str] | str, guides: torch.Tensor, per_class: bool = True, pool: bool = False
    ) -> None:
        self.layer_names = (layer_names,) if isinstance(layer_names, str) else tuple(layer_names)
        if not self.layer_names:
            raise ValueError("FeatureMatch needs at least one layer name.")
        if not isinstance(guides, torch.Tensor) or guides.ndim not in (4, 5):
            raise ValueError("guides must be a (N, C, H, W) or (N, C, D, H, W) tensor of clean images.")
        self.guides = guides
        self.per_class = per_class
        self.pool = pool
        self._guide_features: OrderedDict[str, torch.Tensor] | None = None

    def _prep(self, feats: Features) -> OrderedDict[str, torch.Tensor]:
        feats = OrderedDict((n, feats[n]) for n in self.layer_names)
        return pool_features(feats) if self.pool else feats

    def bind(self, forward: ForwardFn, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> Objective:
        g = self.guides.to(device=x0.device, dtype=x0.dtype)
        if g.shape[1:] != x0.shape[1:]:
            raise ValueError(f"guides have shape {tuple(g.shape)}; each must match an input of {tuple(x0.shape[1:])}.")
        if self.per_class:
            if target is None:
                raise ValueError("FeatureMatch with per_class guides needs a targeted attack (pass target=...).")
            if int(target.max()) >= g.shape[0]:
                raise ValueError(f"target class {int(target.max())} has no guide image ({g.shape[0]} given).")
        elif g.shape[0] not in (1, x0.shape[0]):
            raise ValueError(f"per-sample guides must number 1 or {x0.shape[0]}, got {g.shape[0]}.")
        with torch.no_grad():
            _, feats = forward(g)
        feats = self._prep(feats)
        if self.per_class:
            feats = OrderedDict((n, f[target]) for n, f in feats.items())
        bound = copy.copy(self)
        bound._guide_features = OrderedDict((n, f.detach()) for n, f in feats.items())
        return bound

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        if self._guide_features is None:
            raise RuntimeError("FeatureMatch is used unbound; the attack calls bind() with the guide images first.")
        total = None
        for name, f in self._prep(features).items():
            g = self._guide_features[name]
            d = (f - g).flatten(1).pow(2).sum(1) / g.flatten(1).pow(2).sum(1).clamp_min(1e-12)
            total = d if total is None else total + d
        return -total / len(self.layer_names)  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"FeatureMatch(layers={list(self.layer_names)}, pool={self.pool})"


def _detector_layer_names(detector: nn.Module, layer_names: Sequence[str] | str | None) -> tuple[str, ...]:
    if layer_names is None:
        layer_names = getattr(detector, "layer_names", None)
        if layer_names is None:
            raise ValueError(
                f"{type(detector).__name__} has no `layer_names` attribute; pass the classifier layers it reads."
            )
    names = (layer_names,) if isinstance(layer_names, str) else tuple(layer_names)
    if not names:
        raise ValueError("a detector must read at least one layer.")
    return names


class DetectorLogit(Objective):
    """A detector's "clean" logit for the attack class (target, else current prediction) -- maximise it to
    make the detector accept the input as clean (the ``S_y[f(C(x))]`` term of the paper's WB attack).

    Args:
        detector: any module mapping the features dict (layer name -> ``(B, C, *spatial)`` tensor) to
            ``(B, num_classes)`` clean logits -- e.g. a ``Shield``.
        layer_names: the classifier layers the detector reads; defaults to ``detector.layer_names``.
    """

    def __init__(self, detector: nn.Module, layer_names: Sequence[str] | str | None = None) -> None:
        if not callable(detector):
            raise TypeError(f"detector must be callable, got {type(detector).__name__}.")
        self.detector = detector
        self.layer_names = _detector_layer_names(detector, layer_names)

    def scores(self, features: Features) -> torch.Tensor:
        """All class scores ``(B, num_classes)`` of the detector."""
        out = self.detector(OrderedDict((n, features[n]) for n in self.layer_names))
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the detector must return (B, num_classes) scores, got {got}.")
        return out

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return self.scores(features).gather(1, attack_classes(logits, target)[:, None])[:, 0]

    def networks(self) -> list[nn.Module]:
        return [self.detector] if isinstance(self.detector, nn.Module) else []

    def __repr__(self) -> str:
        return f"DetectorLogit({type(self.detector).__name__}, layers={list(self.layer_names)})"


class DetectorGate:
    """Acceptance test of a detector: the input is accepted when the detector's clean logit of the
    classifier's predicted class reaches that class's threshold.

    Args:
        detector: see :class:`DetectorLogit`.
        threshold: a float for all classes or a ``(num_classes,)`` tensor, in the detector's logit units.
        layer_names: defaults to ``detector.layer_names``.
    """

    def __init__(
        self,
        detector: nn.Module,
        threshold: float | Sequence[float] | torch.Tensor = 0.0,
        layer_names: Sequence[str] | str | None = None,
    ) -> None:
        self.logit = DetectorLogit(detector, layer_names)
        self.layer_names = self.logit.layer_names
        self.threshold = check_threshold(threshold)

    def threshold_for(self, classes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = self.threshold.to(device=like.device, dtype=like.dtype)
        if t.numel() > 1 and int(classes.max()) >= t.shape[0]:
            raise ValueError(f"threshold has {t.shape[0]} entries, but class {int(classes.max())} occurs.")
        return per_sample_threshold(t, classes)

    def scores(self, logits: torch.Tensor, features: Features) -> torch.Tensor:
        """``(B,)`` detector clean logit of the predicted class."""
        return self.logit.scores(features).gather(1, logits.detach().argmax(dim=1)[:, None])[:, 0]

    def accepted(self, logits: torch.Tensor, features: Features, scores: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` bool: does the detector accept each input (as of the classifier's current prediction)?"""
        s = self.scores(logits, features) if scores is None else scores
        return accept_mask(-s, -self.threshold_for(logits.argmax(dim=1), s))

    def margin(self, logits: torch.Tensor, features: Features, classes: torch.Tensor) -> torch.Tensor:
        """``(B,)`` detector margin of ``classes``: its clean logit minus its threshold (``>= 0``: accepted when the
        classifier predicts that class). Differentiable with respect to the features."""
        s = self.logit.scores(features).gather(1, classes[:, None])[:, 0]
        return s - self.threshold_for(classes, s)

    def system_margin(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        """``(B,)`` margin of "fooled and accepted": ``min(classifier margin, detector margin)``, where the detector
        margin is that of the attack class (the target; untargeted: the current prediction). An input with a
        positive value fools the classifier and is accepted; the score-based attacks maximise it."""
        m_c = classifier_margin(logits, y, target)
        return torch.minimum(m_c, self.margin(logits, features, attack_classes(logits, target)))

    def __repr__(self) -> str:
        return f"DetectorGate({self.logit!r}, threshold={self.threshold.tolist()})"


class JointMargin(Objective):
    """The joint objective of a classifier + detector system: ``min(m_c, kappa) + lam * min(m_d, kappa_d)``.

    ``m_c`` is the classifier's CW margin (positive when fooled), ``m_d`` the detector margin of the attack class
    (its clean logit minus its acceptance threshold, non-negative when accepted; :meth:`DetectorGate.margin`).
    Capping both at a small positive value stops either term from growing once it is satisfied, so the gradient
    turns to the other one; ``lam`` trades the two unit scales (classifier logits vs detector logits), which is why
    an evaluation tries several values. With APGD's step-size control this is the "joint objective" attack of the
    worst-case evaluation (:class:`~.presets.JointAPGD`).

    Args:
        gate: the detector and its acceptance threshold(s).
        lam: weight of the detector term (> 0).
        kappa: cap of the classifier margin (``None``: no cap).
        detector_kappa: cap of the detector margin (``None``: no cap).
    """

    def __init__(
        self, gate: DetectorGate, lam: float = 1.0, kappa: float | None = 1.0, detector_kappa: float | None = 1.0
    ) -> None:
        if not isinstance(gate, DetectorGate):
            raise TypeError(f"gate must be a DetectorGate, got {type(gate).__name__}.")
        self.gate = gate
        self.lam = check_positive(lam, "lam")
        self.kappa = None if kappa is None else check_positive(kappa, "kappa", allow_zero=True)
        self.detector_kappa = None if detector_kappa is None else check_positive(
            detector_kappa, "detector_kappa", allow_zero=True)
        self.layer_names = gate.layer_names

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        m_c = classifier_margin(logits, y, target)
        m_d = self.gate.margin(logits, features, attack_classes(logits, target))
        if self.kappa is not None:
            m_c = m_c.clamp_max(self.kappa)
        if self.detector_kappa is not None:
            m_d = m_d.clamp_max(self.detector_kappa)
        return m_c + self.lam * m_d

    def networks(self) -> list[nn.Module]:
        return self.gate.logit.networks()

    def __repr__(self) -> str:
        return f"JointMargin(lam={self.lam:g}, kappa={self.kappa}, detector_kappa={self.detector_kappa})"


class MultiGradientObjective(Objective):
    """An objective whose step direction combines the gradients of several terms (not their sum).

    The loop computes one gradient per entry of :meth:`terms` from the same forward pass and hands them to
    :meth:`combine`. ``__call__`` (the value used to rank iterates) is the sum of the terms.
    """

    def terms(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def combine(
        self,
        grads: Sequence[torch.Tensor],
        terms: Sequence[torch.Tensor],
        logits: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        return torch.stack(self.terms(logits, features, y, target)).sum(0)


def _orthogonal(g: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Remove from ``g`` its per-sample projection on ``other``."""
    a, b = g.flatten(1), other.flatten(1)
    coef = (a * b).sum(1) / (b * b).sum(1).clamp_min(1e-20)
    return (a - coef[:, None] * b).view_as(g)


class DetectorEvasion(MultiGradientObjective):
    """Selective / orthogonal PGD objective (Bryniarski et al., ICLR 2022) against a classifier + detector.

    Two terms from one forward pass: the classifier objective ``J_c`` and the detector's clean logit ``J_d`` of
    the attack class. Each step follows one of them per sample:

    * ``switch_on="classifier"`` (the paper's rule and default): step on ``J_c`` until the classifier is fooled
      (by ``margin`` logits), then on ``J_d``;
    * ``switch_on="detector"``: step on ``J_c`` while the detector accepts, on ``J_d`` while it rejects.

    ``mode="selective"`` steps on the raw gradient; ``mode="orthogonal"`` first removes from the chosen gradient
    its component along the other one (per sample), so that progress on one term does not undo the other.

    Args:
        classifier_objective: e.g. :class:`CrossEntropy` or :class:`CWMargin`.
        gate: the detector and its acceptance threshold(s).
        mode: ``"selective"`` or ``"orthogonal"``.
        switch_on: ``"classifier"`` or ``"detector"`` (see above).
        margin: logit margin by which the classifier must be fooled before switching (0.05 in the paper's code).
    """

    def __init__(
        self,
        classifier_objective: Objective,
        gate: DetectorGate,
        mode: str = "orthogonal",
        switch_on: str = "classifier",
        margin: float = 0.05,
    ) -> None:
        if mode not in ("selective", "orthogonal"):
            raise ValueError(f"mode must be 'selective' or 'orthogonal', got {mode!r}.")
        if switch_on not in ("classifier", "detector"):
            raise ValueError(f"switch_on must be 'classifier' or 'detector', got {switch_on!r}.")
        if not isinstance(gate, DetectorGate):
            raise TypeError(f"gate must be a DetectorGate, got {type(gate).__name__}.")
        self.classifier_objective = classifier_objective
        self.gate = gate
        self.mode = mode
        self.switch_on = switch_on
        self.margin = check_positive(margin, "margin", allow_zero=True)
        self.layer_names = _union([classifier_objective.layer_names, gate.layer_names])

    def bind(self, forward: ForwardFn, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> Objective:
        inner = self.classifier_objective.bind(forward, x0, y, target)
        if inner is self.classifier_objective:
            return self
        bound = copy.copy(self)
        bound.classifier_objective = inner
        return bound

    def terms(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, ...]:
        return self.classifier_objective(logits, features, y, target), self.gate.logit(logits, features, y, target)

    def combine(
        self,
        grads: Sequence[torch.Tensor],
        terms: Sequence[torch.Tensor],
        logits: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> torch.Tensor:
        g_c, g_d = grads
        if self.switch_on == "classifier":
            on_detector = is_success(logits, y, target, self.margin)
        else:
            cls = attack_classes(logits, target)
            on_detector = terms[1].detach() < self.gate.threshold_for(cls, terms[1])
        if self.mode == "orthogonal":
            g_c, g_d = _orthogonal(g_c, g_d), _orthogonal(g_d, g_c)
        return torch.where(on_detector.reshape(-1, *([1] * (g_c.ndim - 1))), g_d, g_c)

    def networks(self) -> list[nn.Module]:
        return self.classifier_objective.networks() + self.gate.logit.networks()

    def __repr__(self) -> str:
        return (
            f"DetectorEvasion({self.classifier_objective!r}, {self.gate!r}, mode={self.mode!r}, "
            f"switch_on={self.switch_on!r})"
        )


class FeatureLikelihood(Objective):
    """HFC's feature term: minus the Mahalanobis distance of each hooked layer's pooled features to the
    nearest Gaussian component of the attack class, averaged over layers and divided by the feature width
    (``J = -mean_l min_k d^2_{l,k} / D_l``). Differentiable; the mixture is a fitted
    :class:`~monai_aegis.attacks.feature_model.GaussianFeatureModel`.

    Args:
        feature_model: the per-class, per-layer Gaussian mixtures (its ``layer_names`` are hooked).
    """

    def __init__(self, feature_model: Any) -> None:
        self.feature_model = feature_model
        self.layer_names = tuple(feature_model.layer_names)

    def __call__(
        self, logits: torch.Tensor, features: Features, y: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        pooled = pool_features(OrderedDict((n, features[n]) for n in self.layer_names))
        dist = self.feature_model.mahalanobis(pooled, attack_classes(logits, target))
        total = None
        for name, d in dist.items():
            d = d / pooled[name].shape[1]
            total = d if total is None else total + d
        return -total / len(dist)  # type: ignore[operator]

    def networks(self) -> list[nn.Module]:
        return [self.feature_model] if isinstance(self.feature_model, nn.Module) else []

    def __repr__(self) -> str:
        return f"FeatureLikelihood(layers={list(self.layer_names)})"
