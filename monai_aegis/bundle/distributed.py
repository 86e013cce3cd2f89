# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Scale-out helpers of the bundles, on ``ignite.distributed``: process-group set-up for torchrun, and attack
evaluation sharded over ranks with the per-sample results gathered on every rank."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["distributed_device", "init_distributed", "is_main_process", "shard_indices", "sharded_detection"]


def init_distributed(backend: str | None = None) -> str:
    """Initialise the default process group from the torchrun environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...) and return the backend: ``nccl`` with CUDA, ``gloo`` on CPU unless given.

    A no-op returning the current backend when a group already exists.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return str(dist.get_backend())
    if "WORLD_SIZE" not in os.environ:
        raise RuntimeError("init_distributed: no torchrun environment (WORLD_SIZE unset); launch with torchrun.")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    return backend


def distributed_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available (and selected as the current device), else ``cpu``."""
    if torch.cuda.is_available():
        dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def is_main_process() -> bool:
    """Rank 0, or no process group."""
    import ignite.distributed as idist

    return idist.get_rank() == 0


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """Contiguous shard of ``range(n)`` for ``rank``, padded (by repeating the last index) to ``ceil(n / world)``
    so every rank holds the same number of samples, as ``all_gather`` needs; see :func:`sharded_detection`."""
    import ignite.distributed as idist

    rank = idist.get_rank() if rank is None else int(rank)
    world = idist.get_world_size() if world_size is None else int(world_size)
    if n < 1:
        raise ValueError("shard_indices: nothing to shard (n < 1).")
    per = -(-n // world)
    idx = torch.arange(rank * per, (rank + 1) * per).clamp_max(n - 1)
    return idx


def sharded_detection(
    wrapper: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    attacks: Sequence[str] | Mapping[str, Mapping[str, Any]],
    batch_size: int = 32,
    tnr: float = 0.9,
) -> dict[str, dict[str, float]]:
    """Attack ``images`` with each named attack through the wrapper (Cushion via BPDA, Shield-aware where the
    attack is), score the Shield and return ``{attack: metrics}`` (AUROC, TPR at ``tnr`` TNR, attack success,
    robust accuracy, ...).

    Under ``torch.distributed`` each rank attacks only its shard (:func:`shard_indices`); the per-sample results are
    gathered so that every rank returns the metrics of the whole set. With deterministic attacks (no random start)
    the result equals the single-process one.

    Args:
        wrapper: a calibrated :class:`~monai_aegis.networks.AegisWrapper`.
        images: ``(N, C, *spatial)`` in [0, 1] (on any device; moved to the wrapper's).
        labels: ``(N,)``.
        attacks: attack names, or ``{name: overrides}`` (``eps``, ``steps``, ``random_start``...).
    """
    import ignite.distributed as idist

    from ..evaluation.detection import ShieldDetectionResult, evaluate_shield_detection

    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images ({images.shape[0]}) and labels ({labels.shape[0]}) differ in length.")
    n = int(images.shape[0])
    idx = shard_indices(n)
    x, y = images[idx], labels[idx]
    spec = dict(attacks) if isinstance(attacks, Mapping) else {a: {} for a in attacks}
    batches = list(zip(x.split(batch_size), y.split(batch_size)))
    out: dict[str, dict[str, float]] = {}
    for name, kwargs in spec.items():
        res = evaluate_shield_detection(wrapper, batches, name, dict(kwargs))
        fields = {}
        for k in ("clean_scores", "adv_scores", "success", "clean_correct", "clean_accept", "adv_accept", "linf",
                  "labels", "targets", "adv_correct"):
            v = getattr(res, k)
            is_bool = v.dtype == torch.bool
            g = idist.all_gather(v.float() if is_bool else v) if idist.get_world_size() > 1 else v
            fields[k] = (g.bool() if is_bool else g)[:n].cpu()
        out[name] = ShieldDetectionResult(**fields).metrics(tnr)
    return out
