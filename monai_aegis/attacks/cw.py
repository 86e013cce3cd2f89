# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Carlini-Wagner L2 (S&P 2017): minimal-L2 adversarial examples by optimisation, batched per-sample constants."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..utils import check_positive
from .engine import Attack, AttackResult, _Candidate
from .objectives import CWMargin, DetectorGate
from .threat import broadcast_mask, check_mask

__all__ = ["CarliniWagnerL2"]


class CarliniWagnerL2(Attack):
    """Carlini-Wagner L2 attack.

    Minimises ``||x' - x||_2^2 + c * max(-margin(x'), -kappa)`` over ``x' = lo + (hi - lo) (tanh(w) + 1) / 2``
    (the tanh box keeps ``x'`` in the clip range) with Adam, for ``binary_search_steps`` values of ``c`` found by
    a per-sample binary search: ``c`` is halved towards the last failure after a success and multiplied by 10 (or
    bisected) after a failure. Each sample keeps its smallest successful perturbation; samples never successful
    get ``x`` back (norm 0, ``success`` False). The margin is the :class:`~.objectives.CWMargin` of the attack
    (targeted: ``Z_t - max_{j != t} Z_j``; untargeted: ``max_{j != y} Z_j - Z_y``), through the preprocessing stage.

    Defaults (ours): 6 search steps x 200 Adam steps, ``lr=0.01``, ``initial_c=0.1``, ``kappa=0`` (Carlini's
    code uses 9 x 10000 with ``c0=1e-3``; fewer steps suffice for the small-margin binary classifiers of the paper).

    Args:
        model: classifier returning logits.
        initial_c: starting constant for every sample.
        binary_search_steps: number of constants tried.
        steps: Adam steps per constant.
        lr: Adam learning rate.
        kappa: confidence margin.
        clip: valid input range ``(low, high)``.
        mask: optional binary mask broadcastable to the input (perturb only where 1).
        abort_early: stop a constant's optimisation when the total loss has not decreased by 0.01 % over the last
            ``steps // 10`` steps.
        preprocess: preprocessing stage differentiated through (BPDA cushion).
        detector_gate: optional gate; success then also requires acceptance.
        memory_format, amp: see :class:`~.engine.Attack`.

    ``result.info`` holds ``"c"`` (the final constants) and ``"best_l2_history"`` (``(binary_search_steps, B)``,
    the best L2 found after each constant, ``inf`` while none).
    """

    def __init__(
        self,
        model: nn.Module,
        initial_c: float = 0.1,
        binary_search_steps: int = 6,
        steps: int = 200,
        lr: float = 0.01,
        kappa: float = 0.0,
        clip: Sequence[float] = (0.0, 1.0),
        mask: torch.Tensor | None = None,
        abort_early: bool = True,
        preprocess: nn.Module | None = None,
        detector_gate: DetectorGate | None = None,
        memory_format: str = "auto",
        amp: bool | str | None = None,
    ) -> None:
        if clip is None or not all(abs(float(c)) < float("inf") for c in clip):
            raise ValueError("CarliniWagnerL2 needs a finite clip range for its tanh box.")
        super().__init__(model, preprocess=preprocess, clip=clip, detector_gate=detector_gate,
                         memory_format=memory_format, amp=amp)
        self.initial_c = check_positive(initial_c, "initial_c")
        for name, v in (("binary_search_steps", binary_search_steps), ("steps", steps)):
            if int(v) != v or int(v) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        self.binary_search_steps = int(binary_search_steps)
        self.steps = int(steps)
        self.lr = check_positive(lr, "lr")
        self.margin = CWMargin(kappa)
        self.kappa = self.margin.kappa
        self.mask = check_mask(mask) if mask is not None else None
        self.abort_early = bool(abort_early)
        self.layer_names = detector_gate.layer_names if detector_gate is not None else ()

    def __repr__(self) -> str:
        return (
            f"CarliniWagnerL2(initial_c={self.initial_c:g}, binary_search_steps={self.binary_search_steps}, "
            f"steps={self.steps}, lr={self.lr:g}, kappa={self.kappa:g}, clip={self.clip})"
        )

    def _perturb(
        self, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
    ) -> AttackResult:
        lo, hi = self.clip  # type: ignore[misc]
        mask = broadcast_mask(x0, self.mask if mask is None else mask)
        b = x0.shape[0]
        dev, dt = x0.device, x0.dtype
        # tanh-space start: w0 with box(w0) == x0 (slightly shrunk so atanh stays finite)
        w0 = torch.atanh(((x0 - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        c = torch.full((b,), self.initial_c, device=dev, dtype=dt)
        lower = torch.zeros_like(c)
        upper = torch.full_like(c, float("inf"))
        best_l2 = torch.full_like(c, float("inf"))
        best: _Candidate | None = None
        history = []
        check_every = max(self.steps // 10, 1)
        with self._hooks(self.layer_names) as hooks:
            fwd = self._forward_fn(hooks, y, target)
            for _ in range(self.binary_search_steps):
                w = w0.clone().requires_grad_(True)
                opt = torch.optim.Adam([w], lr=self.lr)
                found = torch.zeros(b, dtype=torch.bool, device=dev)
                prev = float("inf")
                for it in range(self.steps):
                    x = lo + (hi - lo) * (torch.tanh(w) + 1) / 2
                    if mask is not None:
                        x = torch.where(mask, x, x0)
                    logits, feats = fwd(x)
                    l2sq = (x - x0).flatten(1).pow(2).sum(1)
                    margin = self.margin(logits, feats, y, target)
                    loss = l2sq - c * margin  # Carlini's f = max(-margin, -kappa) = -min(margin, kappa)
                    total = loss.sum()
                    (w.grad,) = torch.autograd.grad(total, w)
                    opt.step()
                    with torch.no_grad():
                        cand = self._candidate(x, logits, feats, -l2sq.sqrt(), y, target)
                        best = cand if best is None else best
                        better = cand.success & (l2sq < best_l2)
                        best = best.merge(cand, take=better)
                        best_l2 = torch.where(better, l2sq, best_l2)
                        found |= cand.success
                    if self.abort_early and (it + 1) % check_every == 0:
                        t = float(total.detach())
                        if t > prev * 0.9999:
                            break
                        prev = t
                with torch.no_grad():
                    upper = torch.where(found, torch.minimum(upper, c), upper)
                    lower = torch.where(found, lower, torch.maximum(lower, c))
                    c = torch.where(upper < float("inf"), (lower + upper) / 2, c * 10)
                    history.append(best_l2.sqrt())
            assert best is not None
            # failures return the clean input; one clean forward gives the final logits of every sample
            x_adv = torch.where(best.success.reshape(-1, *([1] * (x0.ndim - 1))), best.x, x0)
            with torch.no_grad():
                logits, feats = fwd(x_adv)
                final = self._candidate(x_adv, logits, feats, -(x_adv - x0).flatten(1).norm(dim=1), y, target)
        return self._result(x0, final, y, target, info={"c": c, "best_l2_history": torch.stack(history)})
