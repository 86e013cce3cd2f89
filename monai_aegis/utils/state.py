# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Training state beyond the weights: the random number generators a run draws from, and fingerprints of weights.

A resumed training run only reproduces an uninterrupted one when every generator it draws from continues where it
stopped. :class:`RandomStates` gathers them into one object with ``state_dict`` / ``load_state_dict`` (so Ignite's
``Checkpoint`` can save it beside the model), stored as tensors and plain Python values that ``torch.load`` reads
with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["RandomStates", "numpy_state_from_dict", "numpy_state_to_dict", "state_fingerprint"]


def numpy_state_to_dict(state: tuple) -> dict[str, Any]:
    """A NumPy ``RandomState.get_state()`` tuple as a dict of a tensor and plain numbers (``weights_only``-loadable)."""
    name, keys, pos, has_gauss, cached = state
    if name != "MT19937":
        raise ValueError(f"unsupported NumPy bit generator state {name!r} (expected 'MT19937').")
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def numpy_state_from_dict(state: Mapping[str, Any]) -> tuple:
    """Inverse of :func:`numpy_state_to_dict`."""
    keys = torch.as_tensor(state["keys"]).numpy().astype(np.uint32)
    return ("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))


class RandomStates:
    """The random number generators of a run as one checkpointable object.

    Always covers the process-wide generators -- torch's (and CUDA's, once initialised), NumPy's and Python's
    ``random`` -- plus any ``torch.Generator`` objects (e.g. a ``DataLoader``'s shuffling generator) and
    MONAI ``Randomizable`` objects (their NumPy ``R``) given by name.

    Args:
        generators: named ``torch.Generator`` objects.
        randomizables: named objects with a NumPy ``RandomState`` in ``.R`` (MONAI random transforms).

    Example::

        rng = RandomStates({"loader": loader.generator})
        state = rng.state_dict()      # save it with the model
        ...
        rng.load_state_dict(state)    # every generator continues where it was
    """

    def __init__(self, generators: Mapping[str, torch.Generator] | None = None,
                 randomizables: Mapping[str, Any] | None = None) -> None:
        self.generators = {k: g for k, g in (generators or {}).items() if g is not None}
        for k, g in self.generators.items():
            if not isinstance(g, torch.Generator):
                raise TypeError(f"RandomStates: generator '{k}' is a {type(g).__name__}, not a torch.Generator.")
        self.randomizables = {k: r for k, r in (randomizables or {}).items() if r is not None}
        for k, r in self.randomizables.items():
            if not isinstance(getattr(r, "R", None), np.random.RandomState):
                raise TypeError(f"RandomStates: '{k}' ({type(r).__name__}) has no NumPy RandomState in '.R'.")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": numpy_state_to_dict(np.random.get_state()),
            "python": random.getstate(),
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "randomizables": {k: numpy_state_to_dict(r.R.get_state()) for k, r in self.randomizables.items()},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every generator; a named generator missing from ``state`` is an error (the run would diverge)."""
        missing = [k for k in self.generators if k not in state.get("generators", {})]
        missing += [k for k in self.randomizables if k not in state.get("randomizables", {})]
        if missing:
            raise KeyError(f"RandomStates: the saved state has no entry for {missing}.")
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
        np.random.set_state(numpy_state_from_dict(state["numpy"]))
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        for k, g in self.generators.items():
            g.set_state(torch.as_tensor(state["generators"][k], dtype=torch.uint8))
        for k, r in self.randomizables.items():
            r.R.set_state(numpy_state_from_dict(state["randomizables"][k]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def state_fingerprint(obj: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a module's state dict -- names, dtypes, shapes and values, in order -- to tell whether two
    sets of weights are the same (e.g. that a checkpoint was trained on this classifier)."""
    sd = obj.state_dict() if isinstance(obj, nn.Module) else obj
    h = hashlib.sha256()
    for name, t in sd.items():
        t = torch.as_tensor(t).detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
