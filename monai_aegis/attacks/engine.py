# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The attack engine: one iterative loop composed of parts, and the result type every attack returns.

:class:`IterativeAttack` = threat model (:mod:`.threat`) x objective (:mod:`.objectives`) x step rule and
step-size schedule (:mod:`.steps`) x input diversity and gradient smoothing (:mod:`.diversity`) x random
start / restarts / EOT x a preprocessing stage the attack differentiates through (e.g. the Cushion, whose
backward is a BPDA proxy). The named attacks of :mod:`.presets` are short configurations of it.

Model handling: the classifier, the preprocessing stage and any detector are put in eval mode for the attack and
restored exactly afterwards (per sub-module); gradients are taken with ``torch.autograd.grad`` w.r.t. the input
only, inside ``torch.enable_grad()`` (so the attack also works under ``torch.no_grad()`` or MONAI's
``eval_mode``); parameters, their ``.grad`` and BN buffers are never touched.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..networks import FeatureHooks
from ..utils import check_image_batch, check_labels, check_positive
from ..utils.precision import resolve_amp, run_in_precision
from .diversity import GradientSmoothing, InputDiversity
from .objectives import (
    CrossEntropy,
    DetectorGate,
    ForwardFn,
    MultiGradientObjective,
    Objective,
    _union,
    is_success,
)
from .steps import StepRule, StepSchedule, as_schedule, make_step_rule
from .threat import ThreatModel, l2_norm, linf_norm

__all__ = ["AttackResult", "Attack", "IterativeAttack"]

_NO_FEATURES: OrderedDict[str, torch.Tensor] = OrderedDict()
#: per model: whether a channels-last input gives the same logits (see ``Attack.memory_format``)
_LAYOUT_VERDICTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], bool]] = weakref.WeakKeyDictionary()
_MEMORY_FORMATS = ("auto", "preserve", "channels_last")
#: "auto" switches to channels-last from this image area on (ResNet-18 fwd+bwd on 2 CPU threads, batch 16:
#: 64x64 1.19x slower, 128x128 0.93x, 224x224 0.91x; DenseNet-121 224x224 0.86x)
CHANNELS_LAST_MIN_AREA = 128 * 128


@dataclass
class AttackResult:
    """What every attack returns.

    Attributes:
        x_adv: adversarial batch, same shape/dtype/device as the input.
        success: ``(B,)`` bool, on the attacked model *with* its preprocessing stage: prediction == target
            (targeted) or != label (untargeted).
        logits: ``(B, num_classes)`` final logits on ``x_adv``.
        predictions: ``(B,)`` argmax of ``logits``.
        linf: ``(B,)`` L-inf norm of ``x_adv - x``; l2: ``(B,)`` L2 norm (over all non-batch dims).
        objective: ``(B,)`` final value of the attack objective (``None`` where not defined).
        accepted: ``(B,)`` bool, detector acceptance of ``x_adv`` for attacks run with a detector gate.
        detector_scores: ``(B,)`` the detector's clean logit of the predicted class, with a gate.
        targeted: whether the attack was targeted.
        info: attack-specific extras (e.g. CW-L2's constants, the transfer attack's source result). With a detector
            gate: ``fooled_x`` / ``fooled_margin`` -- per sample, the (tracked) iterate that fooled the classifier
            with the highest detector margin (clean logit minus threshold of its predicted class; ``-inf`` where no
            iterate fooled it), to judge the attack at other acceptance thresholds.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    logits: torch.Tensor
    predictions: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    objective: torch.Tensor | None = None
    accepted: torch.Tensor | None = None
    detector_scores: torch.Tensor | None = None
    targeted: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success_undetected(self) -> torch.Tensor:
        """``success & accepted`` (just ``success`` when no detector gate was used)."""
        return self.success if self.accepted is None else self.success & self.accepted

    @property
    def success_rate(self) -> float:
        """Fraction of successful samples."""
        return float(self.success.float().mean())

    def __len__(self) -> int:
        return self.x_adv.shape[0]


@dataclass
class _Candidate:
    """Per-sample state of one iterate (or the best so far).

    With a detector gate it also carries, apart from the ranking, the iterate that fooled the classifier with the
    highest detector margin (``fooled_x``, ``fooled_margin``; ``-inf`` where none fooled it): the point to judge
    at any *other* acceptance threshold, since a stricter or looser threshold reorders "accepted" iterates.
    """

    x: torch.Tensor
    value: torch.Tensor
    success: torch.Tensor  # classifier success AND detector acceptance when gated
    logits: torch.Tensor
    accepted: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    fooled_x: torch.Tensor | None = None
    fooled_margin: torch.Tensor | None = None

    _FIELDS = ("x", "value", "success", "logits", "accepted", "scores", "fooled_x", "fooled_margin")

    def merge(self, other: _Candidate, take: torch.Tensor | None = None) -> _Candidate:
        """Per sample, keep ``other`` where it ranks higher: successful first, then larger objective value (and,
        independently, the fooled iterate with the larger detector margin)."""
        if take is None:
            take = (other.success & ~self.success) | ((other.success == self.success) & (other.value > self.value))
        x_take = take.reshape(-1, *([1] * (self.x.ndim - 1)))

        def pick(a: torch.Tensor | None, b: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor | None:
            return None if a is None or b is None else torch.where(t, b, a)

        fooled_x = fooled_margin = None
        if self.fooled_margin is not None and other.fooled_margin is not None:
            up = other.fooled_margin > self.fooled_margin
            fooled_margin = torch.where(up, other.fooled_margin, self.fooled_margin)
            fooled_x = pick(self.fooled_x, other.fooled_x, up.reshape(x_take.shape))
        return _Candidate(
            x=torch.where(x_take, other.x, self.x),
            value=torch.where(take, other.value, self.value),
            success=torch.where(take, other.success, self.success),
            logits=torch.where(take[:, None], other.logits, self.logits),
            accepted=pick(self.accepted, other.accepted, take),
            scores=pick(self.scores, other.scores, take),
            fooled_x=fooled_x,
            fooled_margin=fooled_margin,
        )

    def index(self, idx: torch.Tensor) -> _Candidate:
        return _Candidate(*(None if t is None else t[idx] for t in (getattr(self, n) for n in self._FIELDS)))

    def put(self, idx: torch.Tensor, other: _Candidate) -> None:
        for name in self._FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None:
                mine[idx] = theirs


class Attack:
    """Base class: validation, model-mode handling, the forward pass through the preprocessing stage with
    feature hooks, and result assembly. Subclasses implement :meth:`_perturb`.

    Args:
        model: any ``nn.Module`` classifier whose forward returns ``(B, num_classes)`` logits.
        preprocess: optional ``nn.Module`` applied before the classifier (e.g. ``CushionLayer``); the attack
            differentiates through it (through its BPDA backward for a non-differentiable cushion).
        clip: valid input range, used to validate inputs (attacks with a threat model use its clip).
        detector_gate: optional :class:`~.objectives.DetectorGate`; then a sample counts as successful only
            when the detector also accepts it (for choosing iterates), and the result reports ``accepted``.
        memory_format: layout of the batch inside the attack (the result has the input's layout).
            ``"channels_last"`` runs the attack on an NHWC/NDHWC copy -- convolutional nets on CPU run their
            forward + backward 7-20 % faster that way at 128 px and more (oneDNN), without touching the model.
            ``"auto"`` (default) does so for float32 4-D CPU batches with more than one channel once a check on two
            samples (both layouts, same RNG state, no RNG consumed) shows identical logits up to float rounding, for
            images of at least 128 x 128 pixels (smaller ones run faster in NCHW); the verdict is cached per model
            and preprocessing stage, and any failure falls back to ``"preserve"`` (the input's layout).
        amp: run the classifier (only it) in reduced precision (:func:`~monai_aegis.utils.resolve_amp`:
            ``True`` = bfloat16 autocast on a CPU that has it, float16 on CUDA; ``"bf16"``, ``"fp16"``). Its logits
            and hooked features come back in float32, so objectives, steps, projections and the success checks
            run in full precision and the budget stays exact; the Cushion and any detector run in float32.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: nn.Module | None = None,
        clip: Sequence[float] | None = (0.0, 1.0),
        detector_gate: DetectorGate | None = None,
        memory_format: str = "auto",
        amp: bool | str | torch.dtype | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be an nn.Module or callable, got {type(preprocess).__name__}.")
        if detector_gate is not None and not isinstance(detector_gate, DetectorGate):
            raise TypeError(f"detector_gate must be a DetectorGate, got {type(detector_gate).__name__}.")
        if memory_format not in _MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {_MEMORY_FORMATS}, got {memory_format!r}.")
        self.model = model
        self.preprocess = preprocess
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.detector_gate = detector_gate
        self.memory_format = memory_format
        self.amp = amp
        resolve_amp(amp, "cuda")  # checks the spelling now (the device is known at the first batch)

    # ------------------------------------------------------------------------------------------ public API
    def perturb(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch.

        Args:
            x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` inputs inside the clip range.
            y: ``(B,)`` true labels; ``None`` uses the model's clean predictions.
            target: ``(B,)`` target classes for a targeted attack, ``None`` for untargeted.
            mask: optional binary mask broadcastable to ``x`` (perturb only where 1); overrides the threat's.
            start: optional starting points of the first run, shaped like ``x`` (projected onto the threat's
                ball around ``x``; replaces the random start), e.g. the perturbations of the previous epoch in
                "free" / ATTA-style adversarial training. Only iterative attacks take them.

        Returns:
            an :class:`AttackResult`.

        Raises:
            ValueError: for a bad batch, labels/targets of the wrong shape or range, or a target equal to the
                label (a targeted attack towards the true class is meaningless).
        """
        if torch.is_inference_mode_enabled():
            raise RuntimeError("attacks need autograd; call them outside torch.inference_mode().")
        check_image_batch(x, "x", spatial_dims=(2, 3), value_range=self.clip)
        with self._attack_mode(), torch.enable_grad():
            x = x.detach()
            if y is None:
                with torch.no_grad():
                    y = self._forward(x, None)[0].argmax(dim=1)
            y = check_labels(y, x.shape[0], name="y").to(x.device)
            if target is not None:
                target = check_labels(target, x.shape[0], name="target").to(x.device)
                same = int((target == y).sum())
                if same:
                    raise ValueError(
                        f"target equals the label for {same} sample(s); a targeted attack needs target != y."
                    )
            extra: dict[str, torch.Tensor] = {}
            if start is not None:
                if not self.takes_start:
                    raise ValueError(f"{type(self).__name__} does not take start points (only iterative attacks do).")
                if tuple(start.shape) != tuple(x.shape):
                    raise ValueError(f"start must have the shape of x {tuple(x.shape)}, got {tuple(start.shape)}.")
                check_image_batch(start, "start", spatial_dims=(2, 3), value_range=self.clip)
                extra["start"] = start.detach().to(device=x.device, dtype=x.dtype)
            if self._use_channels_last(x):
                fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
                x = x.contiguous(memory_format=fmt)
                extra = {k: v.contiguous(memory_format=fmt) for k, v in extra.items()}
                result = self._perturb(x, y, target, mask, **extra)
                result.x_adv = result.x_adv.contiguous()
                return result
            return self._perturb(x, y, target, mask, **extra)

    __call__ = perturb

    # ------------------------------------------------------------------------------------------ memory layout
    def _use_channels_last(self, x: torch.Tensor) -> bool:
        if self.memory_format != "auto":
            return self.memory_format == "channels_last"
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim != 4 or x.shape[1] == 1:
            return False
        if x.shape[2] * x.shape[3] < CHANNELS_LAST_MIN_AREA:  # small images: NHWC convs are slower on CPU
            return False
        key = (id(self.preprocess), type(self.preprocess).__name__, tuple(x.shape[1:]))
        verdicts = _LAYOUT_VERDICTS.setdefault(self.model, {})
        if key not in verdicts:
            verdicts[key] = self._same_logits_channels_last(x[:2])
        return verdicts[key]

    def _same_logits_channels_last(self, x: torch.Tensor) -> bool:
        """Both layouts, same RNG state, no gradient; the global RNG is left as it was."""
        rng = torch.get_rng_state()
        try:
            with torch.no_grad():
                ref = self._forward(x, None)[0]
                torch.set_rng_state(rng)
                alt = self._forward(x.contiguous(memory_format=torch.channels_last), None)[0]
            scale = float(ref.abs().max()) + 1.0
            tol = 1e-3 if resolve_amp(self.amp, x.device) is None else 3e-2  # bfloat16 keeps ~3 significant digits
            return bool(torch.allclose(alt, ref, rtol=tol, atol=0.1 * tol * scale))
        except Exception:  # an op that cannot take the layout: keep the input's
            return False
        finally:
            torch.set_rng_state(rng)

    #: whether :meth:`perturb` takes ``start`` points (iterative attacks)
    takes_start = False

    # ----------------------------------------------------------------------------------------- internals
    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
    ) -> AttackResult:
        raise NotImplementedError

    def _networks(self) -> list[Any]:
        nets: list[Any] = [self.model, self.preprocess]
        if self.detector_gate is not None:
            nets += self.detector_gate.logit.networks()
        return nets

    @contextlib.contextmanager
    def _attack_mode(self) -> Iterator[None]:
        """Eval mode for every network involved; each sub-module's mode is restored exactly afterwards."""
        nets = [m for m in self._networks() if isinstance(m, nn.Module)]
        modes = [(m, m.training) for net in nets for m in net.modules()]
        try:
            for net in nets:
                net.eval()
            yield
        finally:
            for m, mode in modes:
                m.training = mode

    def _hooks(self, layer_names: Sequence[str]) -> contextlib.AbstractContextManager[FeatureHooks | None]:
        """Feature hooks on the classifier for exactly ``layer_names`` (a no-op context when empty)."""
        if not layer_names:
            return contextlib.nullcontext(None)
        return FeatureHooks(self.model, tuple(layer_names))

    def _forward(
        self, x: torch.Tensor, hooks: FeatureHooks | None
    ) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """Logits (and hooked features) of ``model(preprocess(x))``."""
        if hooks is not None:
            hooks.clear()
        z = x
        if self.preprocess is not None:
            z = self.preprocess(x)
            if z.ndim == x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
                z = z.contiguous(memory_format=torch.channels_last)  # the classifier sees the attack's layout
        logits = run_in_precision(self.model, z, self.amp)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model must return (B, num_classes) logits, got {got}.")
        return logits, (hooks.collect() if hooks is not None else _NO_FEATURES)

    def _forward_fn(
        self, hooks: FeatureHooks | None, y: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> ForwardFn:
        """``x -> (logits, features)``; the first call also checks ``y``/``target`` against the class count."""
        checked = y is None

        def fwd(x: torch.Tensor) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
            nonlocal checked
            out = self._forward(x, hooks)
            if not checked:
                self._check_classes(out[0], y, target)  # type: ignore[arg-type]
                checked = True
            return out

        return fwd

    @staticmethod
    def _check_classes(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        n = logits.shape[1]
        for name, t in (("y", y), ("target", target)):
            if t is not None and (int(t.min()) < 0 or int(t.max()) >= n):
                raise ValueError(f"{name} values must lie in [0, {n - 1}] for this {n}-class model.")

    def _candidate(
        self,
        x: torch.Tensor,
        logits: torch.Tensor,
        feats: OrderedDict[str, torch.Tensor],
        value: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
    ) -> _Candidate:
        """Bookkeeping of one iterate from its forward pass (no extra forward)."""
        logits = logits.detach()
        success = is_success(logits, y, target)
        accepted = scores = fooled_margin = None
        if self.detector_gate is not None:
            with torch.no_grad():
                scores = self.detector_gate.scores(logits, feats).detach()
            accepted = self.detector_gate.accepted(logits, feats, scores)
            margin = scores - self.detector_gate.threshold_for(logits.argmax(dim=1), scores)
            fooled_margin = torch.where(success, margin, torch.full_like(margin, float("-inf")))
            success = success & accepted
        x = x.detach()
        return _Candidate(x, value.detach(), success, logits, accepted, scores,
                          None if fooled_margin is None else x, fooled_margin)

    def _result(self, x0: torch.Tensor, best: _Candidate, y: torch.Tensor, target: torch.Tensor | None,
                info: dict[str, Any] | None = None) -> AttackResult:
        info = dict(info or {})
        if best.fooled_margin is not None:
            info.setdefault("fooled_x", best.fooled_x)
            info.setdefault("fooled_margin", best.fooled_margin)
        delta = best.x - x0
        return AttackResult(
            x_adv=best.x,
            success=is_success(best.logits, y, target),
            logits=best.logits,
            predictions=best.logits.argmax(dim=1),
            linf=linf_norm(delta),
            l2=l2_norm(delta),
            objective=best.value,
            accepted=best.accepted,
            detector_scores=best.scores,
            targeted=target is not None,
            info=info,
        )


class IterativeAttack(Attack):
    """One projected-gradient loop, composed of parts.

    Each step: (EOT-average of) ``grad_x J(model(preprocess(diversity(x))))`` -> gradient smoothing -> mask ->
    step rule (sign / L2 / momentum) -> ``x + step_size(i) * direction`` -> optional heavy-ball averaging with the
    previous iterate (APGD) -> projection onto the threat model. The logits of each step's forward are reused
    for bookkeeping; one final forward evaluates the last iterate.

    Args:
        model: classifier returning logits.
        threat: a :class:`~.threat.ThreatModel` (``LinfBall(eps)``, ``L2Ball(eps)``); its ``clip`` is the
            valid input range.
        objective: an :class:`~.objectives.Objective` to maximise; default :class:`~.objectives.CrossEntropy`.
        step_rule: a :class:`~.steps.StepRule` or ``"sign"``, ``"l2"``, ``"momentum"``; default: the
            threat model's steepest-ascent direction (sign for L-inf, unit L2 for L2).
        steps: number of gradient steps (>= 1).
        step_size: base step size; default ``2.5 * eps / steps`` (Madry et al.).
        schedule: step-size schedule: ``None`` (constant), a :class:`~.steps.StepSchedule` (``StepDecay``,
            ``AutoStepSize``) or a callable ``fn(step, base) -> float``.
        random_start: start from a random point of the ball (else from ``x``).
        restarts: number of runs; runs after the first attack only the samples not yet successful, and each
            sample keeps its best result (successful first, then highest objective).
        eot_samples: gradients averaged over this many forward passes per step (EOT over a random
            preprocessing stage or input diversity).
        input_diversity: an :class:`~.diversity.InputDiversity` (DIM) applied to the input of each forward.
        grad_smoothing: a :class:`~.diversity.GradientSmoothing` (TIM) applied to each gradient.
        preprocess: module applied before the classifier and differentiated through (the Cushion with BPDA).
        heavy_ball: APGD's momentum on iterates, ``x <- P(x + a (z - x) + (1 - a)(x - x_prev))`` with
            ``a = heavy_ball`` from the second step on (0.75 in APGD); ``None`` for plain steps.
        keep_best: return each sample's best iterate (successful first, then highest objective) instead of the
            last one. Exact for deterministic forwards; with input diversity or EOT the per-step ranking uses the
            randomised forward, and the chosen point is re-evaluated cleanly.
        random_start_surface: draw the random start on the surface of the ball (APGD).
        detector_gate, memory_format, amp: see :class:`Attack`.

    Raises:
        ValueError: for a non-positive ``steps``, ``restarts``, ``eot_samples`` or ``step_size``.
    """

    def __init__(
        self,
        model: nn.Module,
        threat: ThreatModel,
        objective: Objective | None = None,
        step_rule: StepRule | str | None = None,
        steps: int = 20,
        step_size: float | None = None,
        schedule: StepSchedule | Any | None = None,
        random_start: bool = False,
        restarts: int = 1,
        eot_samples: int = 1,
        input_diversity: InputDiversity | None = None,
        grad_smoothing: GradientSmoothing | None = None,
        preprocess: nn.Module | None = None,
        heavy_ball: float | None = None,
        keep_best: bool = False,
        random_start_surface: bool = False,
        detector_gate: DetectorGate | None = None,
        memory_format: str = "auto",
        amp: bool | str | torch.dtype | None = None,
    ) -> None:
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be a ThreatModel (LinfBall, L2Ball), got {type(threat).__name__}.")
        super().__init__(
            model, preprocess=preprocess, clip=threat.clip, detector_gate=detector_gate, memory_format=memory_format,
            amp=amp,
        )
        objective = CrossEntropy() if objective is None else objective
        if not isinstance(objective, Objective):
            raise TypeError(f"objective must be an Objective, got {type(objective).__name__}.")
        for name, v in (("steps", steps), ("restarts", restarts), ("eot_samples", eot_samples)):
            if int(v) != v or int(v) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        self.threat = threat
        self.objective = objective
        self.step_rule = make_step_rule(step_rule)
        self.steps = int(steps)
        self.step_size = check_positive(2.5 * threat.eps / self.steps if step_size is None else step_size, "step_size")
        self.schedule = as_schedule(schedule)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.eot_samples = int(eot_samples)
        self.input_diversity = input_diversity
        self.grad_smoothing = grad_smoothing
        if heavy_ball is not None and not 0.0 < float(heavy_ball) <= 1.0:
            raise ValueError(f"heavy_ball must lie in (0, 1], got {heavy_ball!r}.")
        self.heavy_ball = None if heavy_ball is None else float(heavy_ball)
        self.keep_best = bool(keep_best)
        self.random_start_surface = bool(random_start_surface)
        self.layer_names = _union([objective.layer_names, detector_gate.layer_names if detector_gate else ()])

    def __repr__(self) -> str:
        parts = [
            f"threat={self.threat!r}",
            f"objective={self.objective!r}",
            f"step_rule={self.step_rule!r}",
            f"steps={self.steps}",
            f"step_size={self.step_size:g}",
            f"schedule={self.schedule!r}",
            f"random_start={self.random_start}",
        ]
        for name in ("restarts", "eot_samples"):
            if getattr(self, name) != 1:
                parts.append(f"{name}={getattr(self, name)}")
        for name in ("input_diversity", "grad_smoothing", "preprocess", "heavy_ball", "detector_gate"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def _networks(self) -> list[Any]:
        return super()._networks() + self.objective.networks()

    @property
    def _exact_bookkeeping(self) -> bool:
        return self.input_diversity is None and self.eot_samples == 1

    # ------------------------------------------------------------------------------------------------ loop
    takes_start = True

    def _perturb(
        self, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None,
        start: torch.Tensor | None = None,
    ) -> AttackResult:
        mask = self.threat.resolve_mask(x0, mask)
        with self._hooks(self.layer_names) as hooks:
            fwd = self._forward_fn(hooks, y, target)
            best: _Candidate | None = None
            for r in range(self.restarts):
                if best is None:
                    idx = None
                else:
                    idx = (~best.success).nonzero()[:, 0]
                    if idx.numel() == 0:
                        break
                sub = (lambda t: t) if idx is None else (lambda t: None if t is None else t[idx])
                xs, ys, ts = sub(x0), sub(y), sub(target)
                objective = self.objective.bind(fwd, xs, ys, ts)
                cand = self._run(xs, ys, ts, sub(mask), objective, fwd, start if r == 0 else None)
                if best is None:
                    best = cand
                else:
                    best.put(idx, best.index(idx).merge(cand))
        assert best is not None
        return self._result(x0, best, y, target)

    def _gradient(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        objective: Objective,
        fwd: ForwardFn,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """EOT-averaged input gradient; returns ``(grad, logits, value, features)`` of the step's forward(s)."""
        multi = isinstance(objective, MultiGradientObjective)
        grads: list[torch.Tensor] | None = None
        terms_sum: list[torch.Tensor] | None = None
        logits_sum = value_sum = None
        feats: OrderedDict[str, torch.Tensor] = _NO_FEATURES
        for _ in range(self.eot_samples):
            xg = x.detach().requires_grad_(True)
            xin = self.input_diversity(xg) if self.input_diversity is not None else xg
            logits, feats = fwd(xin)
            if multi:
                terms = objective.terms(logits, feats, y, target)  # type: ignore[attr-defined]
                g = [
                    torch.autograd.grad(t.sum(), xg, retain_graph=k < len(terms) - 1)[0]
                    for k, t in enumerate(terms)
                ]
                terms = [t.detach() for t in terms]
                value = torch.stack(terms).sum(0)
                terms_sum = terms if terms_sum is None else [a + b for a, b in zip(terms_sum, terms)]
            else:
                value = objective(logits, feats, y, target)
                g = [torch.autograd.grad(value.sum(), xg)[0]]
                value = value.detach()
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
            logits = logits.detach()
            logits_sum = logits if logits_sum is None else logits_sum + logits
            value_sum = value if value_sum is None else value_sum + value
        assert grads is not None and logits_sum is not None and value_sum is not None
        n = self.eot_samples
        if n > 1:
            grads = [g / n for g in grads]
            logits_sum, value_sum = logits_sum / n, value_sum / n
            terms_sum = None if terms_sum is None else [t / n for t in terms_sum]
        feats = OrderedDict((k, v.detach()) for k, v in feats.items())
        if multi:
            grad = objective.combine(grads, terms_sum, logits_sum, y, target)  # type: ignore[attr-defined]
        else:
            grad = grads[0]
        return grad, logits_sum, value_sum, feats

    def _run(
        self,
        x0: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        mask: torch.Tensor | None,
        objective: Objective,
        fwd: ForwardFn,
        start: torch.Tensor | None = None,
    ) -> _Candidate:
        threat, schedule = self.threat, self.schedule
        bounds = threat.bounds(x0, mask)
        if start is not None:  # given starting points (e.g. last epoch's perturbations), made feasible
            x = threat.project(x0, start, mask, bounds)
        elif self.random_start:
            x = threat.random_init(x0, mask, bounds, surface=self.random_start_surface)
        else:
            x = x0
        rule_state = self.step_rule.init(x0)
        sched_state = schedule.start(self.step_size, self.steps, x0)
        track = self.keep_best
        best: _Candidate | None = None
        # APGD: the highest-objective iterate and its gradient, to restart from
        v_x = v_grad = v_value = None
        x_prev: torch.Tensor | None = None
        shape = (-1,) + (1,) * (x0.ndim - 1)
        for i in range(self.steps):
            grad, logits, value, feats = self._gradient(x, y, target, objective, fwd)
            with torch.no_grad():
                if track:
                    cand = self._candidate(x, logits, feats, value, y, target)
                    best = cand if best is None else best.merge(cand)
                if schedule.needs_best:
                    if v_value is None:
                        v_x, v_grad, v_value = x, grad, value
                    else:
                        up = value > v_value
                        v_x = torch.where(up.reshape(shape), x, v_x)
                        v_grad = torch.where(up.reshape(shape), grad, v_grad)
                        v_value = torch.where(up, value, v_value)
                    restore = schedule.observe(i, sched_state, value, v_value)
                    if restore is not None:
                        x = torch.where(restore.reshape(shape), v_x, x)
                        grad = torch.where(restore.reshape(shape), v_grad, grad)
                if self.grad_smoothing is not None:
                    grad = self.grad_smoothing(grad)
                if mask is not None:
                    grad = grad * mask
                direction, rule_state = self.step_rule(grad, rule_state, threat)
                eta = schedule.size(i, sched_state)
                if isinstance(eta, torch.Tensor):
                    stepped = x + eta.reshape(shape) * direction
                else:
                    stepped = torch.add(x, direction, alpha=eta)  # one fused pass
                z = threat.project(x0, stepped, mask, bounds)
                if self.heavy_ball is not None and x_prev is not None:
                    a = self.heavy_ball
                    z = threat.project(x0, x + a * (z - x) + (1 - a) * (x - x_prev), mask, bounds)
                x_prev, x = x, z
        # one clean forward on the last iterate
        with torch.no_grad():
            logits, feats = fwd(x)
            value = objective(logits, feats, y, target)
            last = self._candidate(x, logits, feats, value, y, target)
            if not track:
                return last
            assert best is not None
            best = best.merge(last)
            if not self._exact_bookkeeping:  # re-evaluate the chosen point without the randomised forward
                tracked = best
                logits, feats = fwd(best.x)
                value = objective(logits, feats, y, target)
                best = self._candidate(best.x, logits, feats, value, y, target)
                best.fooled_x, best.fooled_margin = tracked.fooled_x, tracked.fooled_margin
            return best
