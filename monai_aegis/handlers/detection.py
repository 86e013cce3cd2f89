# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Validation of the Shield during training: AUROC and TPR at a fixed TNR against a fixed attack."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from monai.utils import min_version, optional_import

from ..networks.nets.aegis import AegisWrapper

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["DetectionMetricsHandler"]


class DetectionMetricsHandler:
    """Every ``interval`` epochs, attack a validation set with a fixed attack and write the Shield's detection
    metrics to ``engine.state.metrics`` (``<prefix>auroc``, ``<prefix>tpr@90tnr``, ``<prefix>attack_success``,
    ``<prefix>robust_accuracy``, ...), so that ``CheckpointSaver(key_metric_name=...)``, ``StatsHandler`` and
    ``TensorBoardStatsHandler`` can use them.

    Before scoring, the wrapper's reject threshold is re-calibrated on the clean validation images at ``tnr``
    (the Shield changes every epoch); AUROC does not depend on it.

    Args:
        wrapper: the :class:`AegisWrapper` whose Shield is being trained.
        data: validation data: an ``(images, labels)`` pair or an iterable of batches.
        attack: a registry name (through the Cushion; WB/WB_d/SPGD/OPGD also attack the Shield), an attack
            object, or a callable ``(x, y, target) -> result``.
        attack_kwargs: overrides for a named attack (``eps``, ``steps``, ...).
        tnr: true-negative rate of the reported TPR and of the calibration.
        interval: run every ``interval`` epochs.
        prefix: metric name prefix.
        max_batches: limit the validation batches.
    """

    def __init__(
        self,
        wrapper: AegisWrapper,
        data: Any,
        attack: str | Callable[..., Any] = "PGD",
        attack_kwargs: Mapping[str, Any] | None = None,
        tnr: float = 0.9,
        interval: int = 1,
        prefix: str = "val_",
        max_batches: int | None = None,
    ) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.wrapper = wrapper
        self.data = data
        self.attack = attack
        self.attack_kwargs = dict(attack_kwargs or {})
        self.tnr = float(tnr)
        self.interval = int(interval)
        self.prefix = prefix
        self.max_batches = max_batches
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def _clean_images(self) -> Any:
        if isinstance(self.data, tuple) and len(self.data) == 2:
            return self.data[0]
        return self.data

    def compute(self) -> dict[str, float]:
        from ..evaluation.detection import evaluate_shield_detection

        self.wrapper.calibrate(self._clean_images(), tnr=self.tnr)
        result = evaluate_shield_detection(
            self.wrapper, self.data, self.attack, self.attack_kwargs if isinstance(self.attack, str) else None,
            max_batches=self.max_batches,
        )
        return result.metrics(self.tnr)

    def __call__(self, engine: Any) -> None:
        metrics = self.compute()
        for k, v in metrics.items():
            engine.state.metrics[f"{self.prefix}{k}"] = v
        name = self.attack if isinstance(self.attack, str) else type(self.attack).__name__
        self.logger.info(
            f"epoch {engine.state.epoch}: Shield vs {name}: AUROC {metrics['auroc']:.4f}, "
            f"attack success {metrics['attack_success']:.3f}, robust accuracy {metrics['robust_accuracy']:.3f}"
        )
