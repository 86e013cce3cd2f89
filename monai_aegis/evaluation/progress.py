# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Progress bars of the evaluation studies: a tqdm bar when tqdm is installed and wanted, else a no-op."""

from __future__ import annotations

from monai.utils import optional_import

tqdm, _has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["Progress"]


class Progress:
    """A tqdm bar when available and wanted, else a no-op; ``bar(n)`` advances it by ``n`` images.

    Args:
        enabled: show the bar at all.
        total: number of images the study will process.
        desc: the bar's label (change it with :meth:`set`).
    """

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = tqdm(total=total, desc=desc, unit="img", leave=False) if enabled and _has_tqdm else None

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def set(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_description(desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
