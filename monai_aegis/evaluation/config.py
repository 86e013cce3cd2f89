# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Plumbing shared by the evaluation studies' settings: attack specs and building a settings dataclass from a dict."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ..attacks.presets import attack_key

__all__ = ["SettingsMixin", "attack_key", "attack_spec", "check_unique_labels"]

T = TypeVar("T", bound="SettingsMixin")


def attack_spec(spec: Any) -> tuple[str, str, dict[str, Any]]:
    """``(label, registry name, kwargs)`` of an attack spec: a name, or ``{"name", "label"?, **kwargs}``."""
    if isinstance(spec, str):
        return spec, spec, {}
    if isinstance(spec, Mapping) and "name" in spec:
        kw = {k: v for k, v in spec.items() if k not in ("name", "label")}
        return str(spec.get("label", spec["name"])), str(spec["name"]), kw
    raise ValueError(f"an attack must be a name or a dict with a 'name', got {spec!r}.")


def check_unique_labels(labels: Sequence[str]) -> None:
    """Raise ``ValueError`` when two attacks share a label (results are keyed by it)."""
    dup = sorted({x for x in labels if list(labels).count(x) > 1})
    if dup:
        raise ValueError(f"attack labels must be unique, got duplicates {dup}; give dict specs a 'label'.")


class SettingsMixin:
    """``from_dict`` / ``to_dict`` for a settings dataclass; unknown keys get a "did you mean" error.

    Subclasses set ``_WHAT`` (the word used in the error, e.g. ``"evaluation setting"``).
    """

    _WHAT = "setting"

    @classmethod
    def from_dict(cls: type[T], config: Mapping[str, Any] | None = None, **overrides: Any) -> T:
        """Build from a plain dict (e.g. a bundle config section); keys are the attribute names.

        Raises:
            ValueError: for an unknown key (with close matches).
        """
        merged = {**dict(config or {}), **overrides}
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in merged:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise ValueError(f"unknown {cls._WHAT} {key!r}.{hint}")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]
