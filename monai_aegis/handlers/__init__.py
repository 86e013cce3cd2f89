from .checkpoint import TrainingCheckpoint
from .detection import DetectionMetricsHandler
from .epsilon import EpsilonScheduler

__all__ = ["DetectionMetricsHandler", "EpsilonScheduler", "TrainingCheckpoint"]
