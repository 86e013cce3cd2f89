# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Atomic file writing and safe loading: results and checkpoints are never left half-written."""

from __future__ import annotations

import json
import math
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "safe_torch_load"]


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None]) -> Path:
    """Call ``writer(tmp_path)`` on a temporary file beside ``path``, then atomically rename it to ``path``.

    The temporary file lives in the destination folder (same file system), so ``os.replace`` is atomic: a
    reader sees either the previous complete file or the new complete file, never a partial one. On error
    the temporary file is removed and the destination is left untouched. The file gets the permissions of a
    plainly created one (``0o666`` less the process umask), not ``mkstemp``'s private ``0o600``, so colleagues on a
    shared workstation can read reports and predictions.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` to ``path``."""

    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding=encoding) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, _write)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN / Inf floats replaced by ``None`` (recursively through mappings, lists, tuples and tensors,
    which become lists), so :func:`atomic_write_json` can store it; mapping keys become strings."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_safe(obj.tolist())
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (NaN/Inf are rejected so the file stays valid JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Mapping[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code execution).

    Raises:
        FileNotFoundError: naming the missing checkpoint.
        ValueError: when the file is not a readable weights-only checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{p}'.")
    if p.stat().st_size == 0:
        raise ValueError(f"checkpoint '{p}' is empty (0 bytes): an interrupted copy or save?")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # objects outside the weights-only allow-list
        raise ValueError(
            f"checkpoint '{p}' is refused: it holds Python objects that would execute code when loaded "
            f"(only plain tensor / state-dict checkpoints are read, with weights_only=True). Detail: "
            f"{error_line(e, _TORCH_LOAD_ADVICE)}") from e
    except Exception as e:  # truncated or corrupt files, not a torch file at all
        raise ValueError(f"checkpoint '{p}' cannot be read (truncated, corrupt or not a PyTorch checkpoint): "
                         f"{error_line(e, _TORCH_LOAD_ADVICE)}") from e


#: lines of torch.load's messages that advise loading unsafely (never relayed to the user)
_TORCH_LOAD_ADVICE = ("weights_only=False", "(1)", "Please file an issue")


def error_line(exc: BaseException, skip: tuple[str, ...] = ()) -> str:
    """``"ExceptionType: first line"`` of an exception's message -- its first non-empty line that contains none of
    ``skip`` (a line starting with one also counts) -- or the bare type name when there is none: the one-line form
    of an error for logs, reports and command-line messages."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not any(s in line for s in skip):
            return f"{type(exc).__name__}: {line}"
    return type(exc).__name__
