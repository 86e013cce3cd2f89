# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Feature-space adversarial detectors: the paper's baselines KD, LID, MAHA and DNN (see ``base`` for the interface)."""

from .base import DETECTORS, FeatureDetector, Features, load_detector, pairwise_sq_dists
from .dnn import DNNDetector, build_detector_head
from .kd import KernelDensityDetector, gaussian_kde_log_density
from .lid import LIDDetector, knn_distances, lid_mle, minibatch_lid
from .mahalanobis import MahalanobisDetector, class_conditional_gaussian, ledoit_wolf_covariance, whitening_matrix

__all__ = [
    "DETECTORS",
    "DNNDetector",
    "FeatureDetector",
    "Features",
    "KernelDensityDetector",
    "LIDDetector",
    "MahalanobisDetector",
    "build_detector_head",
    "class_conditional_gaussian",
    "gaussian_kde_log_density",
    "knn_distances",
    "ledoit_wolf_covariance",
    "lid_mle",
    "load_detector",
    "minibatch_lid",
    "pairwise_sq_dists",
    "whitening_matrix",
]
