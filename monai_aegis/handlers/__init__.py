# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
from .checkpoint import TrainingCheckpoint
from .detection import DetectionMetricsHandler
from .epsilon import EpsilonScheduler

__all__ = ["DetectionMetricsHandler", "EpsilonScheduler", "TrainingCheckpoint"]
