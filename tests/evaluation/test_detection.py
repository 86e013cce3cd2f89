import math

import pytest
import torch

from monai_aegis.evaluation import ShieldDetectionResult, detection_metrics
from monai_aegis.metrics import detection_auroc


def test_detection_metrics_uses_masks():
    clean = torch.tensor([0.0, 1.0, 2.0, 9.0])
    adv = torch.tensor([5.0, 6.0, -1.0, 7.0])
    correct = torch.tensor([True, True, True, False])  # the 9.0 clean image was misclassified: not a negative
    success = torch.tensor([True, True, False, True])  # the -1.0 attack failed: not a positive
    m = detection_metrics(clean, adv, correct, correct & success)
    assert m["n_clean"] == 3 and m["n_adv"] == 2
    assert m["auroc"] == 1.0 and m["tpr@90tnr"] == 1.0
    unmasked = detection_metrics(clean, adv)
    assert unmasked["auroc"] == pytest.approx(detection_auroc(clean, adv)) and unmasked["auroc"] < 1.0
    empty = detection_metrics(clean, adv, None, torch.zeros(4, dtype=torch.bool), tnr=0.95)
    assert math.isnan(empty["auroc"]) and math.isnan(empty["tpr@95tnr"]) and empty["n_adv"] == 0


def test_shield_detection_result_robust_accuracy():
    # 4 images: adversarial versions (0) fooled + accepted, (1) fooled + rejected, (2) not fooled, (3) fooled + accepted
    res = ShieldDetectionResult(
        clean_scores=torch.tensor([0.0, 0.1, 0.2, 0.3]), adv_scores=torch.tensor([0.05, 2.0, 0.0, 1.0]),
        success=torch.tensor([True, True, False, True]), clean_correct=torch.tensor([True, True, True, False]),
        clean_accept=torch.ones(4, dtype=torch.bool), adv_accept=torch.tensor([True, False, True, True]),
        linf=torch.zeros(4), labels=torch.tensor([0, 0, 1, 1]), targets=torch.tensor([1, 1, 0, 0]),
        adv_correct=torch.tensor([False, False, True, False]),
    )
    m = res.metrics()
    assert m["robust_accuracy"] == 0.5  # images 1 (rejected) and 2 (still correct)
    assert m["attack_success"] == 0.75 and m["n_successful"] == 3
    # negatives: clean images 0-2; positives: successful attacks on correctly classified images (0, 1)
    assert m["auroc"] == pytest.approx(detection_auroc(torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.05, 2.0])))


