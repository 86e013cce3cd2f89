# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
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
