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

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
