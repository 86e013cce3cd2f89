# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""monai_aegis: the Medical Aegis defence (Cushion + Shield) as a MONAI plug-in.

``import monai_aegis`` is light: sub-packages (``transforms``, ``networks``, ``attacks``, ...) are
imported on first attribute access, and optional dependencies (ignite, scikit-learn, torchvision, ...)
only when the feature that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "attacks",
    "bundle",
    "data",
    "detectors",
    "engines",
    "evaluation",
    "handlers",
    "metrics",
    "networks",
    "transforms",
    "utils",
)

#: the names a user meets first, importable from the top level (``from monai_aegis import AegisWrapper``), each
#: from its one home
_EXPORTS = {
    "AegisWrapper": "networks",
    "Shield": "networks",
    "CushionLayer": "networks",
    "Cushion": "transforms",
    "Cushiond": "transforms",
    "RandBenignShift": "transforms",
    "RandBenignShiftd": "transforms",
    "build_aegis": "networks",
    "ShieldTrainer": "engines",
    "make_attack": "attacks",
    "worst_case_evaluation": "evaluation",
}

__all__ = ["__version__", *_SUBMODULES, *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
