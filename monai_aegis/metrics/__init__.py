from .detection import ScoreArray, detection_auroc, roc_curve, threshold_at_tnr, tpr_at_tnr

__all__ = ["ScoreArray", "detection_auroc", "roc_curve", "threshold_at_tnr", "tpr_at_tnr"]
