from .detection import ShieldDetectionResult, evaluate_shield_detection, other_class_targets

__all__ = ["ShieldDetectionResult", "evaluate_shield_detection", "other_class_targets"]
