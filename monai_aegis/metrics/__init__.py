from .detection import ScoreArray, detection_auroc, roc_curve, threshold_at_tnr, tpr_at_tnr, tpr_key

__all__ = ["ScoreArray", "detection_auroc", "roc_curve", "threshold_at_tnr", "tpr_at_tnr", "tpr_key"]
