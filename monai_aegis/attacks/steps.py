# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Step rules (how a gradient becomes a step direction) and step-size schedules.

Step rules are stateless objects with an explicit per-attack state, so one attack object can be run on many
batches (or threads) without leaking momentum between them::

    state = rule.init(x0)
    direction, state = rule(grad, state, threat)

Schedules map the step index to a step size; :class:`AutoStepSize` (APGD) also reads the objective values the
loop observes and asks it to restart some samples from their best point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..utils import check_positive
from .threat import ThreatModel, unit_l2

__all__ = [
    "StepRule",
    "SignStep",
    "L2Step",
    "NormalizedStep",
    "MomentumStep",
    "StepSchedule",
    "ConstantStep",
    "StepDecay",
    "LambdaStep",
    "AutoStepSize",
    "as_schedule",
    "make_step_rule",
]


class StepRule:
    """Turn a (smoothed, masked) gradient into a step direction; the loop multiplies it by the step size."""

    def init(self, x0: torch.Tensor) -> Any:
        """Per-attack state (``None`` for stateless rules)."""
        return None

    def __call__(self, grad: torch.Tensor, state: Any, threat: ThreatModel) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SignStep(StepRule):
    """``sign(grad)``: steepest ascent for the L-inf ball (FGSM/BIM/PGD)."""

    def __call__(self, grad: torch.Tensor, state: Any, threat: ThreatModel) -> tuple[torch.Tensor, Any]:
        return grad.sign(), state


class L2Step(StepRule):
    """``grad / ||grad||_2`` per sample: steepest ascent for the L2 ball (PGD-L2)."""

    def __call__(self, grad: torch.Tensor, state: Any, threat: ThreatModel) -> tuple[torch.Tensor, Any]:
        return unit_l2(grad), state


class NormalizedStep(StepRule):
    """The threat model's own steepest-ascent direction (sign for L-inf, unit L2 for L2)."""

    def __call__(self, grad: torch.Tensor, state: Any, threat: ThreatModel) -> tuple[torch.Tensor, Any]:
        return threat.normalize_step(grad), state


class MomentumStep(StepRule):
    """MI-FGSM momentum (Dong et al., 2018): ``g <- mu * g + grad / mean(|grad|)``, then the threat model's
    direction of ``g`` (sign for L-inf, unit L2 for L2).

    Args:
        decay: momentum factor ``mu`` (>= 0); 1.0 in MI-FGSM.
    """

    def __init__(self, decay: float = 1.0) -> None:
        self.decay = check_positive(decay, "decay", allow_zero=True)

    def init(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x0)

    def __call__(self, grad: torch.Tensor, state: Any, threat: ThreatModel) -> tuple[torch.Tensor, Any]:
        l1 = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
        g = grad / l1 + state * self.decay
        return threat.normalize_step(g), g

    def __repr__(self) -> str:
        return f"MomentumStep(decay={self.decay:g})"


_RULES: dict[str, Callable[[], StepRule]] = {
    "sign": SignStep,
    "l2": L2Step,
    "normalized": NormalizedStep,
    "auto": NormalizedStep,
    "momentum": MomentumStep,
}


def make_step_rule(rule: StepRule | str | None) -> StepRule:
    """A :class:`StepRule` from an instance, a name (``"sign"``, ``"l2"``, ``"momentum"``, ``"auto"``) or
    ``None`` (``"auto"``: the threat model's direction).

    Raises:
        ValueError: for an unknown name.
    """
    if rule is None:
        return NormalizedStep()
    if isinstance(rule, StepRule):
        return rule
    key = str(rule).lower()
    if key not in _RULES:
        raise ValueError(f"unknown step rule {rule!r}; use a StepRule or one of {sorted(_RULES)}.")
    return _RULES[key]()


# ------------------------------------------------------------------------------------------------- schedules
class StepSchedule:
    """Step size per step. Subclasses override :meth:`size`; adaptive ones also :meth:`observe`.

    ``start`` returns the per-attack state; ``size(i, state)`` returns a float or a ``(B,)`` tensor;
    ``observe(i, state, value, best_value)`` sees the objective at evaluation ``i`` (0 = the starting point)
    and may return a ``(B,)`` bool tensor of samples to restart from their best point.
    """

    #: the loop must track each sample's best point and gradient (APGD restarts from them)
    needs_best: bool = False

    def start(self, step_size: float, steps: int, x0: torch.Tensor) -> Any:
        return step_size

    def size(self, i: int, state: Any) -> float | torch.Tensor:
        raise NotImplementedError

    def observe(self, i: int, state: Any, value: torch.Tensor, best_value: torch.Tensor) -> torch.Tensor | None:
        return None


class ConstantStep(StepSchedule):
    """The same step size at every step."""

    def size(self, i: int, state: Any) -> float:
        return state

    def __repr__(self) -> str:
        return "ConstantStep()"


class StepDecay(StepSchedule):
    """Multiply the step size by ``factor`` from step ``at`` on (WB_d: x0.1 after step 50).

    Args:
        at: first (0-based) step that uses the decayed size.
        factor: multiplier, in ``(0, 1]`` typically.
    """

    def __init__(self, at: int = 50, factor: float = 0.1) -> None:
        if int(at) < 0:
            raise ValueError(f"at must be >= 0, got {at!r}.")
        self.at = int(at)
        self.factor = check_positive(factor, "factor")

    def size(self, i: int, state: Any) -> float:
        return state * self.factor if i >= self.at else state

    def __repr__(self) -> str:
        return f"StepDecay(at={self.at}, factor={self.factor:g})"


class LambdaStep(StepSchedule):
    """Step size from a callable ``fn(step_index, base_step_size) -> float``."""

    def __init__(self, fn: Callable[[int, float], float]) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}.")
        self.fn = fn

    def size(self, i: int, state: Any) -> float:
        return float(self.fn(i, state))

    def __repr__(self) -> str:
        return f"LambdaStep({getattr(self.fn, '__name__', self.fn)!r})"


class AutoStepSize(StepSchedule):
    """APGD's step-size control (Croce & Hein, ICML 2020, Alg. 1).

    The step starts at ``2 * eps`` (pass that as the attack's ``step_size``). Checkpoints are
    ``w_0 = 0, w_1 = ceil(p_1 N)`` and then every ``max(w_j - w_{j-1} - p_decr N, p_min N)`` evaluations. At a
    checkpoint a sample's step is halved, and the sample restarts from its best point, if (1) the objective
    increased in at most ``rho`` of the steps since the last checkpoint, or (2) the step was not halved at the
    last checkpoint and the best objective did not improve since. As in the reference implementation
    (fra31/auto-attack, torchattacks ``APGD``) the interval lengths are ``int(0.22 N)``, ``int(0.03 N)`` and
    ``int(0.06 N)`` (at least 1), and (1) uses ``<=``. The oldest comparison of the first interval uses the
    starting point's objective (the reference compares with 0 there).

    Args:
        rho: fraction of increasing steps below which the step is halved (0.75).
        p1, p_decr, p_min: checkpoint parameters as fractions of the step count (0.22, 0.03, 0.06).
    """

    needs_best = True

    def __init__(self, rho: float = 0.75, p1: float = 0.22, p_decr: float = 0.03, p_min: float = 0.06) -> None:
        self.rho = check_positive(rho, "rho")
        self.p1 = check_positive(p1, "p1")
        self.p_decr = check_positive(p_decr, "p_decr")
        self.p_min = check_positive(p_min, "p_min")

    def start(self, step_size: float, steps: int, x0: torch.Tensor) -> dict[str, Any]:
        b = x0.shape[0]
        return {
            "eta": torch.full((b,), float(step_size), device=x0.device, dtype=x0.dtype),
            "k": max(int(self.p1 * steps), 1),
            "k_decr": max(int(self.p_decr * steps), 1),
            "k_min": max(int(self.p_min * steps), 1),
            "since": 0,
            "increases": torch.zeros(b, device=x0.device, dtype=torch.long),
            "last_value": None,
            "best_at_check": None,
            "reduced_at_check": torch.ones(b, device=x0.device, dtype=torch.bool),
        }

    def size(self, i: int, state: dict[str, Any]) -> torch.Tensor:
        return state["eta"]

    def observe(
        self, i: int, state: dict[str, Any], value: torch.Tensor, best_value: torch.Tensor
    ) -> torch.Tensor | None:
        if state["last_value"] is None:  # the starting point
            state["last_value"] = value
            state["best_at_check"] = best_value.clone()
            return None
        state["increases"] += value > state["last_value"]
        state["last_value"] = value
        state["since"] += 1
        if state["since"] < state["k"]:
            return None
        oscillating = state["increases"] <= state["k"] * self.rho
        stalled = ~state["reduced_at_check"] & (state["best_at_check"] >= best_value)
        reduce = oscillating | stalled
        state["eta"] = torch.where(reduce, state["eta"] / 2, state["eta"])
        state["reduced_at_check"] = reduce
        state["best_at_check"] = best_value.clone()
        state["increases"].zero_()
        state["since"] = 0
        state["k"] = max(state["k"] - state["k_decr"], state["k_min"])
        return reduce

    def __repr__(self) -> str:
        return f"AutoStepSize(rho={self.rho:g})"


def as_schedule(schedule: StepSchedule | Callable[[int, float], float] | None) -> StepSchedule:
    """A :class:`StepSchedule` from an instance, a callable ``fn(step, base)`` or ``None`` (constant)."""
    if schedule is None:
        return ConstantStep()
    if isinstance(schedule, StepSchedule):
        return schedule
    return LambdaStep(schedule)
