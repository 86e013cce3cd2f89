"""Robustness evaluation of defended classifiers: attack-and-score helpers, the stress test, the evaluation runner
(:func:`run_evaluation`, also ``python -m monai_aegis evaluate``) with its report and ``results.json`` schema."""

from .detection import ShieldDetectionResult, detection_metrics, evaluate_shield_detection, other_class_targets
from .runner import (
    ADAPTIVE_ATTACKS,
    BASELINE_DETECTORS,
    DEFAULT_ATTACKS,
    EvaluationConfig,
    default_layer_subsets,
    run_evaluation,
)
from .schema import RESULTS_SCHEMA, SCHEMA_VERSION, validate, validate_results
from .stress import FeatureMean, stress_table, stress_test

__all__ = [
    "ADAPTIVE_ATTACKS",
    "BASELINE_DETECTORS",
    "DEFAULT_ATTACKS",
    "EvaluationConfig",
    "FeatureMean",
    "RESULTS_SCHEMA",
    "SCHEMA_VERSION",
    "ShieldDetectionResult",
    "default_layer_subsets",
    "detection_metrics",
    "evaluate_shield_detection",
    "other_class_targets",
    "run_evaluation",
    "stress_table",
    "stress_test",
    "validate",
    "validate_results",
]
