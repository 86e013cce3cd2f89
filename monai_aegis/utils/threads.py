# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""One knob for the CPU threads a job uses: torch's intra-op threads, which the Cushion's JPEG worker threads follow.

On a shared machine two jobs that each take every core (torch's default) slow each other far more than twice: their
OpenMP threads wait at barriers for peers that the other job has descheduled. Give each job its share instead
(``--threads``, the bundles' ``num_threads``, or the ``AEGIS_NUM_THREADS`` environment variable): the JPEG codec
of the Cushion runs between the model's operations with at most ``torch.get_num_threads()`` workers, so a job never
has more busy threads than its share. ``benchmarks/threads.py`` measures two concurrent screening jobs against one.
"""

from __future__ import annotations

import os

import torch

__all__ = ["THREADS_ENV", "set_num_threads"]

#: environment variable read by :func:`set_num_threads` when no number is given
THREADS_ENV = "AEGIS_NUM_THREADS"


def set_num_threads(num_threads: int | str | None = None) -> int:
    """Set the threads this process computes with, and return the number in effect.

    Args:
        num_threads: a positive number of threads; ``None`` (or ``0`` / ``""``) reads :data:`THREADS_ENV` and,
            when that is unset too, leaves torch's setting (by default one thread per physical core).

    Raises:
        ValueError: a value (or the environment variable) that is not a positive integer, naming where it came
            from.
    """
    source = "num_threads"
    if num_threads in (None, 0, ""):
        num_threads, source = os.environ.get(THREADS_ENV) or None, THREADS_ENV
    if num_threads is None:
        return torch.get_num_threads()
    try:
        n = int(num_threads)
        if n != float(num_threads):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{source} must be a positive integer, got {num_threads!r}.") from None
    if n < 1:
        raise ValueError(f"{source} must be a positive integer, got {num_threads!r}.")
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()
