from .detection import (
    ScoreArray,
    accept_mask,
    check_threshold,
    detection_auroc,
    per_sample_threshold,
    roc_curve,
    threshold_at_tnr,
    tpr_at_tnr,
    tpr_key,
)

__all__ = [
    "ScoreArray",
    "accept_mask",
    "check_threshold",
    "detection_auroc",
    "per_sample_threshold",
    "roc_curve",
    "threshold_at_tnr",
    "tpr_at_tnr",
    "tpr_key",
]
