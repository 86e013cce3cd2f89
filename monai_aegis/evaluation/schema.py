# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The schema of ``results.json`` written by :func:`~monai_aegis.evaluation.run_evaluation`, and a small validator.

The schema is a JSON-Schema-style dict using a subset of the vocabulary (``type`` -- a name or a list of names among
object/array/string/number/integer/boolean/null --, ``properties``, ``required``, ``additionalProperties`` (a schema
for the values of other keys), ``items``, ``enum``, ``minimum``, ``maximum``). :func:`validate_results` checks a
document against it without any dependency. Metrics that are undefined (e.g. an AUROC without successful attacks) are
``null``. ``docs/evaluation.md`` describes every field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["RESULTS_SCHEMA", "SCHEMA_VERSION", "WORST_CASE_SCHEMA", "validate", "validate_results"]

SCHEMA_VERSION = 1

_NUM = {"type": ["number", "null"]}
_RATE = {"type": ["number", "null"], "minimum": 0.0, "maximum": 1.0}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}


def _obj(required: Mapping[str, Any], optional: Mapping[str, Any] | None = None, extra: Any = None) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": {**required, **(optional or {})},
                              "required": list(required)}
    if extra is not None:
        schema["additionalProperties"] = extra
    return schema


def _records(required: Mapping[str, Any], optional: Mapping[str, Any] | None = None) -> dict:
    return {"type": "array", "items": _obj(required, optional)}


_RATES_BY_NAME = {"type": "object", "additionalProperties": _RATE}
_BOOL = {"type": "boolean"}
_CHECKS = _records({"name": _STR, "passed": {"type": ["boolean", "null"]}, "detail": _STR})

#: one record per attack run of the worst-case ensemble (``n_new``: images it broke that no earlier run had)
_MEMBERS = _records({"eps": _NUM, "proxy": _STR, "attack": _STR, "n_run": _INT, "n_broken": _INT, "n_new": _INT,
                     "seconds": _NUM})

#: one split's record of the worst-case evaluation (:func:`~monai_aegis.evaluation.worst_case_evaluation`)
WORST_CASE_SPLIT_SCHEMA: dict[str, Any] = _obj({
    "n": _INT,
    "class_counts": {"type": "array", "items": _INT},
    "random_defence": _BOOL,
    "proxies": _STRS,
    "attacks": _STRS,
    "thresholds": {"type": "object", "additionalProperties": {"type": ["array", "null"], "items": {"type": "number"}}},
    "clean": _obj({"accuracy": _RATE, "accepted": _RATE, "accepted_at": _RATES_BY_NAME}),
    "curve": _records({
        "eps": {"type": "number", "minimum": 0.0}, "robust_accuracy": _RATE, "whitebox_robust_accuracy": _RATE,
        "robust_accuracy_by_proxy": _RATES_BY_NAME, "success_rate": _RATE, "sr": _RATES_BY_NAME,
        "broken_by_blackbox_only": {"type": ["integer", "null"], "minimum": 0}, "clean_accuracy": _RATE,
        "clean_accepted": _RATE,
    }, {"undefended_robust_accuracy": _RATE}),
    "members": _MEMBERS,
    "blackbox": _records({"eps": _NUM, "queries": _INT, "n_run": _INT, "n_broken": _INT, "n_beats_whitebox": _INT,
                          "seconds": _NUM}),
    "convergence": _records({"eps": _NUM, "n": _INT, "steps": _INT, "pgd_steps": _INT, "restarts": _INT, "base_robust_accuracy": _RATE,
                             "strong_robust_accuracy": _RATE, "change": _NUM, "passed": _BOOL, "seconds": _NUM},
                            {"members": _MEMBERS}),
    "undefended": _records({"eps": _NUM, "robust_accuracy": _RATE, "accuracy": _RATE}),
    "checks": _CHECKS,
    "notes": _STRS,
    "seconds": _NUM,
})

#: the ``worst_case`` section of ``results.json``: the settings and one record per evaluated split
WORST_CASE_SCHEMA: dict[str, Any] = _obj({
    "settings": {"type": "object"},
    "splits": {"type": "object", "additionalProperties": WORST_CASE_SPLIT_SCHEMA},
})

#: the schema of ``results.json``
RESULTS_SCHEMA: dict[str, Any] = _obj(
    {
        "schema_version": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "created": _STR,
        "config": {"type": "object"},
        "system": _obj({
            "classifier": _STR, "num_classes": _INT, "class_names": _STRS, "layer_names": _STRS, "cushion": _STR,
            "threshold": {"type": "array", "items": {"type": "number"}}, "detectors": _STRS,
        }),
        "data": _obj({
            "fit": _obj({"n": _INT, "n_adversarial": _INT, "fit_attack": _STR}),
            "calibration": _obj({"n": _INT, "source": _STR}),
            "splits": {"type": "object", "additionalProperties": _obj({
                "n": _INT, "class_counts": {"type": "array", "items": _INT}},
                {"subset_seed": {"type": ["integer", "null"]}})},
        }),
        "clean": _records({
            "split": _STR, "cushion": _STR, "accuracy": _RATE, "accepted": _RATES_BY_NAME,
        }),
        "detection": _records({
            "split": _STR, "cushion": _STR, "attack": _STR, "detector": _STR, "auroc": _RATE, "tpr": _RATE,
            "n_clean": _INT, "n_adv": _INT, "adv_accepted": _RATE,
        }),
        "attacks": _records({
            "split": _STR, "cushion": _STR, "attack": _STR, "n": _INT, "success_rate": _RATE,
            "undetected_success": _RATE, "robust_accuracy": _RATES_BY_NAME, "mean_linf": _NUM, "mean_l2": _NUM,
            "seconds": _NUM,
        }),
        "directions": _records({
            "split": _STR, "cushion": _STR, "attack": _STR, "source": _STR, "target": _STR, "n": _INT,
            "success_rate": _RATE, "undetected_success": _RATE, "auroc": _RATE, "tpr": _RATE,
            "robust_accuracy": _RATE,
        }),
        "layer_ablation": _records({
            "split": _STR, "attack": _STR, "subset": _STR, "layers": _STRS, "detector": _STR, "auroc": _RATE,
            "tpr": _RATE,
        }),
        "cushion_ablation": _records({
            "split": _STR, "cushion": _STR, "attack": _STR, "clean_accuracy": _RATE, "clean_accepted": _RATE,
            "success_rate": _RATE, "undetected_success": _RATE, "auroc": _RATE, "tpr": _RATE,
            "robust_accuracy": _RATE,
        }),
        "stress_test": _records({
            "cushion": _STR, "layer": _STR, "direction": {"type": "string", "enum": ["up", "down"]},
            "clean_mean": _NUM, "adv_mean": _NUM, "relative_change": _NUM, "n": _INT,
        }),
        "sanity": _obj({
            "eps_sweep": _records({"attack": _STR, "eps": {"type": "number"}, "success_rate": _RATE,
                                   "undetected_success": _RATE}),
            "checks": _CHECKS,
        }),
        "figures": {"type": "object", "additionalProperties": {"type": ["string", "array"]}},
        "notes": _STRS,
        "timing": {"type": "object", "additionalProperties": _NUM},
    },
    {"worst_case": WORST_CASE_SCHEMA},
)

_TYPES: dict[str, Any] = {
    "object": Mapping, "array": (list, tuple), "string": str, "boolean": bool, "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name not in _TYPES:
        raise ValueError(f"unknown schema type {name!r}.")
    return isinstance(value, _TYPES[name])


def validate(value: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Check ``value`` against ``schema`` (the subset described in the module docstring).

    Returns:
        the list of violations as ``"<json path>: <problem>"`` strings (empty when valid).
    """
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in names):
            return [f"{path}: expected {' or '.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:  # NaN is not valid JSON: undefined metrics must be null
            errors.append(f"{path}: NaN (use null)")
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}: missing required key {key!r}")
        extra = schema.get("additionalProperties")
        for key, v in value.items():
            if key in props:
                errors += validate(v, props[key], f"{path}.{key}")
            elif isinstance(extra, Mapping):
                errors += validate(v, extra, f"{path}.{key}")
    if isinstance(value, Sequence) and not isinstance(value, str) and "items" in schema:
        for i, v in enumerate(value):
            errors += validate(v, schema["items"], f"{path}[{i}]")
    return errors


def validate_results(results: Mapping[str, Any]) -> None:
    """Validate a ``results.json`` document against :data:`RESULTS_SCHEMA`.

    Raises:
        ValueError: listing every violation (up to 20).
    """
    errors = validate(results, RESULTS_SCHEMA)
    if errors:
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise ValueError("results do not match the results.json schema:\n" + "\n".join(errors[:20]) + more)
