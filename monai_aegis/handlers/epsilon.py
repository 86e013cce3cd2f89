# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Per-epoch schedule of the attack budget used by adversarial Shield training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monai.utils import min_version, optional_import

from ..attacks.presets import DEFAULT_EPS_LINF

PiecewiseLinearStateScheduler, _has_ignite = optional_import(
    "ignite.handlers.state_param_scheduler", "0.4.11", min_version, "PiecewiseLinearStateScheduler", as_type="base"
)
Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["EpsilonScheduler"]


class EpsilonScheduler(PiecewiseLinearStateScheduler):
    """Write the current attack budget to ``engine.state.<param_name>`` at the start of every epoch.

    A thin layer over Ignite's ``PiecewiseLinearStateScheduler`` (so it has ``state_dict``/``load_state_dict``
    and resumes from a checkpoint) with a MONAI-style one-argument :meth:`attach`. Attached at the default
    ``Events.EPOCH_STARTED``, the budget is a function of ``engine.state.epoch`` rather than of a count of calls, so a
    run resumed from a checkpoint at epoch ``k`` continues the same schedule at epoch ``k + 1`` with no state of
    its own to restore. By default it ramps linearly
    from ``start`` at epoch 1 to ``end`` at epoch ``ramp_epochs`` and then stays at ``end`` -- the paper's ramp
    from 1/256 to 16/256 across 25 epochs. Arbitrary schedules (plateaus, warm-up) go through
    ``milestones_values`` as ``[(epoch, eps), ...]``.

    Args:
        start: budget at epoch 1.
        end: budget from epoch ``ramp_epochs`` on.
        ramp_epochs: epoch at which ``end`` is reached (``1`` = constant ``end``).
        milestones_values: explicit ``(epoch, value)`` pairs; overrides ``start``/``end``/``ramp_epochs``.
        param_name: engine state attribute to write (read by :class:`~monai_aegis.engines.AdversarialShieldUpdate`).
        save_history: keep the values in ``engine.state.param_history``.
    """

    def __init__(
        self,
        start: float = 1 / 256,
        end: float = DEFAULT_EPS_LINF,
        ramp_epochs: int = 25,
        milestones_values: Sequence[Sequence[float]] | None = None,
        param_name: str = "eps",
        save_history: bool = False,
    ) -> None:
        if milestones_values is None:
            if int(ramp_epochs) < 1:
                raise ValueError(f"ramp_epochs must be >= 1, got {ramp_epochs}.")
            if int(ramp_epochs) == 1:
                milestones_values = [(1, float(end)), (2, float(end))]
            else:
                milestones_values = [(1, float(start)), (int(ramp_epochs), float(end))]
        pairs = [(int(m), float(v)) for m, v in milestones_values]
        if any(v <= 0 for _, v in pairs):
            raise ValueError(f"attack budgets must be > 0, got {pairs}.")
        if len(pairs) == 1:
            pairs.append((pairs[0][0] + 1, pairs[0][1]))
        super().__init__(milestones_values=pairs, param_name=param_name, save_history=save_history, create_new=True)

    def attach(self, engine: Any, event: Any = None) -> None:  # type: ignore[override]
        """Attach at ``Events.EPOCH_STARTED`` (or ``event``)."""
        self._by_epoch = event is None or event == Events.EPOCH_STARTED
        super().attach(engine, Events.EPOCH_STARTED if event is None else event)

    def __call__(self, engine: Any) -> None:
        if getattr(self, "_by_epoch", False):  # epoch e (1-based) gets the e-th value, whatever ran before
            self.event_index, self._index = engine.state.epoch - 1, 0
        super().__call__(engine)
