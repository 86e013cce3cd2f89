# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Reduced precision for the model only: one ``amp`` switch -> an autocast dtype for the device.

``amp`` is ``False`` / ``None`` (full precision), ``True`` (the device's default: bfloat16 on a CPU that computes
it natively -- AVX512-BF16 / AMX, checked through oneDNN -- float16 on CUDA), or an explicit ``"bf16"`` /
``"fp16"``. Only the network's forward (and its backward) runs in that precision: callers compute losses, attack
steps and projections in float32 on the float32 outputs, so budgets and thresholds stay exact.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from monai.inferers import Inferer

__all__ = ["AMP_CHOICES", "REDUCED_DTYPES", "AutocastInferer", "autocast", "cpu_supports_bf16", "full_precision",
           "resolve_amp", "run_in_precision"]

logger = logging.getLogger(__name__)

#: accepted spellings of an explicit reduced-precision type
AMP_CHOICES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                                       "fp16": torch.float16, "float16": torch.float16}


#: the floating types autocast computes in
REDUCED_DTYPES = (torch.float16, torch.bfloat16)


def full_precision(t: Any) -> Any:
    """A float16 / bfloat16 tensor as float32 (what leaves an autocast region); anything else unchanged, so a
    float64 model keeps its float64 outputs."""
    return t.float() if isinstance(t, torch.Tensor) and t.dtype in REDUCED_DTYPES else t


@functools.lru_cache(maxsize=None)
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 convolutions and matrix products natively (oneDNN's check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


_WARNED: set[str] = set()


def resolve_amp(amp: bool | str | torch.dtype | None, device: Any = "cpu") -> torch.dtype | None:
    """The autocast dtype that ``amp`` asks for on ``device``, or ``None`` for full precision.

    ``True`` on a CPU without native bfloat16 falls back to full precision with a warning, once per process
    (emulated bfloat16 is slower than float32 there); float16 on a CPU is refused (CPU autocast supports it
    poorly and it does not pay).

    Raises:
        ValueError: an unknown ``amp`` value, or ``"fp16"`` on a CPU.
    """
    if amp is None or amp is False:
        return None
    if isinstance(amp, torch.dtype):
        if amp not in AMP_CHOICES.values():
            raise ValueError(f"amp must be torch.bfloat16 or torch.float16 as a dtype; got {amp}.")
        amp = "bf16" if amp == torch.bfloat16 else "fp16"
    dev = torch.device(device)
    if amp is True:
        if dev.type == "cuda":
            return torch.float16
        if dev.type == "cpu" and cpu_supports_bf16():
            return torch.bfloat16
        if dev.type not in _WARNED:
            _WARNED.add(dev.type)
            logger.warning("amp=True: this %s has no native bfloat16; running in full precision.", dev.type)
        return None
    key = str(amp).lower()
    if key not in AMP_CHOICES:
        raise ValueError(f"amp must be False, True, or one of {sorted(AMP_CHOICES)}; got {amp!r}.")
    dtype = AMP_CHOICES[key]
    if dev.type == "cpu" and dtype == torch.float16:
        raise ValueError("amp='fp16' is not supported on the CPU; use amp='bf16' (or True).")
    return dtype


@contextlib.contextmanager
def autocast(device: Any, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` on ``device``'s type with ``dtype``; a no-op context when ``dtype`` is ``None``."""
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def run_in_precision(fn: Callable[..., Any], x: torch.Tensor, amp: bool | str | torch.dtype | None,
                     *args: Any, **kwargs: Any) -> Any:
    """``fn(x, *args, **kwargs)`` under the autocast ``amp`` asks for on ``x``'s device, its tensor output(s) handed
    back in float32 (a tuple or list of outputs element by element): the one way the library runs a model in
    reduced precision."""
    with autocast(x.device, resolve_amp(amp, x.device)):
        out = fn(x, *args, **kwargs)
    if isinstance(out, (tuple, list)):
        return type(out)(full_precision(o) for o in out)
    return full_precision(out)


class AutocastInferer(Inferer):
    """MONAI inferer running the network under :func:`autocast` and handing back float32 outputs, so the trainer's
    loss is computed in full precision (what ``SupervisedTrainer(amp=True)`` does on CUDA, for any device).

    Args:
        device: where the network runs.
        dtype: autocast dtype (``None``: full precision), e.g. from :func:`resolve_amp`.
    """

    def __init__(self, device: Any = "cpu", dtype: torch.dtype | None = torch.bfloat16) -> None:
        super().__init__()
        self.device, self.dtype = torch.device(device), dtype

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            out = network(inputs, *args, **kwargs)
        return full_precision(out)
