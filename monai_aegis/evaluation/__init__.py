# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Robustness evaluation of defended classifiers: attack-and-score helpers, the stress test, the worst-case adaptive
evaluation (:func:`worst_case_evaluation`, the headline measure), the evaluation runner (:func:`run_evaluation`, also
``python -m monai_aegis evaluate``) with its report and ``results.json`` schema."""

from .detection import ShieldDetectionResult, detection_metrics, evaluate_shield_detection, other_class_targets
from .ood import outlier_acceptance
from .runner import (
    ADAPTIVE_ATTACKS,
    BASELINE_DETECTORS,
    DEFAULT_ATTACKS,
    EvaluationConfig,
    default_layer_subsets,
    run_evaluation,
)
from .schema import RESULTS_SCHEMA, SCHEMA_VERSION, WORST_CASE_SCHEMA, validate, validate_results
from .settings import HFC_STRENGTHENED, PAPER_PROTOCOL
from .stress import FeatureMean, stress_table, stress_test
from .worst_case import (
    DEFAULT_WORST_CASE_EPS,
    DETECTOR_ENSEMBLE,
    UNDEFENDED_ENSEMBLE,
    WorstCaseConfig,
    curve_summary,
    worst_case_evaluation,
)

__all__ = [
    "ADAPTIVE_ATTACKS",
    "BASELINE_DETECTORS",
    "DEFAULT_ATTACKS",
    "DEFAULT_WORST_CASE_EPS",
    "DETECTOR_ENSEMBLE",
    "HFC_STRENGTHENED",
    "PAPER_PROTOCOL",
    "RESULTS_SCHEMA",
    "SCHEMA_VERSION",
    "UNDEFENDED_ENSEMBLE",
    "WORST_CASE_SCHEMA",
    "EvaluationConfig",
    "FeatureMean",
    "ShieldDetectionResult",
    "WorstCaseConfig",
    "curve_summary",
    "default_layer_subsets",
    "detection_metrics",
    "evaluate_shield_detection",
    "other_class_targets",
    "outlier_acceptance",
    "run_evaluation",
    "stress_table",
    "stress_test",
    "validate",
    "validate_results",
    "worst_case_evaluation",
]
