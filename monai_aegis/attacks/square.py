# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Square attack (Andriushchenko et al., ECCV 2020): a score-based, gradient-free L-inf attack.

It only queries the defended system's outputs -- the true Cushion, classifier and detector, no gradient and no BPDA
proxy anywhere -- so it is the evaluation's check against gradient masking: if it breaks an image that every
white-box attack failed on, the white-box gradients were misleading (Carlini et al. 2019, sec. 4.6).

Each query changes one random square window of every still-unbroken image to a random vertex of the L-inf ball
(per channel ``+eps`` or ``-eps``) and keeps the change when the loss improves; the window's area shrinks on the
reference schedule (``p_init`` of the image, halved at fixed fractions of the query budget). The loss is the
classifier's CW margin, or -- with a detector gate -- the system margin ``min(classifier margin, detector
margin)`` (:meth:`~.objectives.DetectorGate.system_margin`), positive exactly when the input fools the classifier
and is accepted. All images of a batch are updated together (one batched forward per query).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..utils import check_positive
from .engine import Attack, AttackResult
from .objectives import DetectorGate, classifier_margin
from .presets import DEFAULT_EPS_LINF
from .threat import LinfBall

__all__ = ["SquareAttack", "square_window_fraction"]


def square_window_fraction(p_init: float, query: int, queries: int) -> float:
    """Fraction of the image area changed at ``query`` of ``queries`` (the reference schedule, defined on
    10,000 queries and rescaled to the budget)."""
    it = int(query / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


class SquareAttack(Attack):
    """L-inf Square attack on a classifier, or on a classifier + detector system with ``detector_gate``.

    Args:
        model: classifier returning logits.
        eps: L-inf budget.
        queries: query budget per image (one forward pass each, after the initial one).
        p_init: initial fraction of the image area changed per query (0.8 as in AutoAttack; 0.05 in the paper's
            untargeted ImageNet setting).
        preprocess: module applied before the classifier (the Cushion) -- only its forward is used.
        detector_gate: the detector with its acceptance threshold(s): the loss is then the system margin and
            success means fooled *and* accepted.
        clip: valid input range.
        seed: seed of the attack's own random generator (windows and signs), so a run is reproducible whatever
            the global RNG state.

    ``result.info["queries"]`` is the number of queries each sample used before it succeeded (or the budget).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS_LINF,
        queries: int = 1000,
        p_init: float = 0.8,
        preprocess: nn.Module | None = None,
        detector_gate: DetectorGate | None = None,
        clip: Sequence[float] = (0.0, 1.0),
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, preprocess=preprocess, clip=clip, detector_gate=detector_gate, **kwargs)
        if int(queries) != queries or int(queries) < 1:
            raise ValueError(f"queries must be an integer >= 1, got {queries!r}.")
        p = check_positive(p_init, "p_init")
        if p > 1.0:
            raise ValueError(f"p_init must lie in (0, 1], got {p_init!r}.")
        self.threat = LinfBall(eps, clip)
        self.queries = int(queries)
        self.p_init = p
        self.seed = int(seed)
        self.layer_names = detector_gate.layer_names if detector_gate is not None else ()

    def __repr__(self) -> str:
        gate = f", detector_gate={self.detector_gate!r}" if self.detector_gate is not None else ""
        return f"SquareAttack(eps={self.threat.eps:g}, queries={self.queries}, p_init={self.p_init:g}{gate})"

    def perturb(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> AttackResult:
        if isinstance(x, torch.Tensor) and x.ndim != 4:
            raise ValueError(f"SquareAttack supports 2-D images (B, C, H, W), got shape {tuple(x.shape)}.")
        if mask is not None:
            raise ValueError("SquareAttack does not support perturbation masks.")
        return super().perturb(x, y, target, mask)

    __call__ = perturb

    def _loss(self, logits: torch.Tensor, feats: Any, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """The margin to maximise (positive = success)."""
        if self.detector_gate is None:
            return classifier_margin(logits, y, target)
        return self.detector_gate.system_margin(logits, feats, y, target)

    @torch.no_grad()
    def _perturb(
        self, x0: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
    ) -> AttackResult:
        gen = torch.Generator(device=x0.device).manual_seed(self.seed)
        eps = self.threat.eps
        b, c, h, w = x0.shape
        lo, hi = self.threat.bounds(x0, None)
        with self._hooks(self.layer_names) as hooks:
            fwd = self._forward_fn(hooks, y, target)

            def evaluate(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
                t = None if target is None else target[idx]
                logits, feats = fwd(x)
                return self._loss(logits, feats, y[idx], t), logits, feats

            # vertical stripes of +-eps (one sign per column and channel), as in the reference implementation
            signs = torch.randint(0, 2, (b, c, 1, w), generator=gen, device=x0.device).to(x0.dtype) * 2 - 1
            x_best = torch.clamp(x0 + eps * signs, lo, hi)
            everyone = torch.arange(b, device=x0.device)
            loss, _, _ = evaluate(x_best, everyone)
            used = torch.zeros(b, dtype=torch.long, device=x0.device)
            rows = torch.arange(h, device=x0.device)
            cols = torch.arange(w, device=x0.device)
            for q in range(self.queries):
                idx = (loss <= 0).nonzero()[:, 0]
                if idx.numel() == 0:
                    break
                n = idx.numel()
                s = max(1, min(h, w, int(round((square_window_fraction(self.p_init, q, self.queries) * h * w) ** 0.5))))
                r0 = torch.randint(0, h - s + 1, (n,), generator=gen, device=x0.device)
                c0 = torch.randint(0, w - s + 1, (n,), generator=gen, device=x0.device)
                window = (((rows[None] >= r0[:, None]) & (rows[None] < (r0 + s)[:, None]))[:, None, :, None]
                          & ((cols[None] >= c0[:, None]) & (cols[None] < (c0 + s)[:, None]))[:, None, None, :])
                xs, x0s = x_best[idx], x0[idx]
                new = (torch.randint(0, 2, (n, c, 1, 1), generator=gen, device=x0.device).to(x0.dtype) * 2 - 1) * eps
                # a window that already equals the drawn vertex in every channel would waste the query: flip one
                delta = xs - x0s
                same = ((delta - new).abs() < 1e-7 * max(1.0, eps)) | ~window
                unchanged = same.flatten(2).all(2).all(1)
                new[unchanged, 0] = -new[unchanged, 0]
                cand = torch.where(window, torch.clamp(x0s + new, lo[idx], hi[idx]), xs)
                cand_loss, _, _ = evaluate(cand, idx)
                used[idx] += 1
                better = cand_loss > loss[idx]
                if bool(better.any()):
                    upd = idx[better]
                    x_best[upd] = cand[better]
                    loss[upd] = cand_loss[better]
            logits, feats = fwd(x_best)
            best = self._candidate(x_best, logits, feats, self._loss(logits, feats, y, target), y, target)
        return self._result(x0, best, y, target, info={"queries": used})
