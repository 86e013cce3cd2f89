"""check_threshold / per_sample_threshold: the one threshold rule of the Shield, its training gate and the
evaluation (accepted when the clean logit is >= the threshold of the predicted class)."""

import pytest
import torch

from monai_aegis.metrics import check_threshold, per_sample_threshold


def test_per_sample_threshold_global_and_per_class():
    pred = torch.tensor([1, 0, 1])
    assert per_sample_threshold(torch.tensor([0.5]), pred).tolist() == [0.5, 0.5, 0.5]
    assert per_sample_threshold(torch.tensor(0.5), pred).tolist() == [0.5, 0.5, 0.5]
    assert per_sample_threshold(torch.tensor([-1.0, 2.0]), pred).tolist() == [2.0, -1.0, 2.0]


def test_check_threshold():
    assert check_threshold(0.3).tolist() == pytest.approx([0.3])
    assert check_threshold([1, 2], num_classes=2).dtype == torch.float32
    for bad in ([], [float("nan")], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="finite"):
            check_threshold(bad)
    with pytest.raises(ValueError, match="have 3 entries, got 2"):
        check_threshold([1.0, 2.0], num_classes=3)


def test_one_rule_for_the_wrapper_and_the_attack_gate():
    from monai_aegis.attacks.objectives import DetectorGate
    from monai_aegis.networks import AegisWrapper

    class Det(torch.nn.Module):
        layer_names = ("a",)

        def forward(self, feats):
            return feats["a"]

    gate = DetectorGate(Det(), torch.tensor([0.0, 1.0]))
    classes = torch.tensor([0, 1, 1])
    assert gate.threshold_for(classes, torch.zeros(3)).tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="threshold has 2 entries, but class 2 occurs"):
        gate.threshold_for(torch.tensor([2]), torch.zeros(1))
    with pytest.raises(ValueError, match="finite"):
        DetectorGate(Det(), float("inf"))
    w = AegisWrapper(torch.nn.Conv2d(1, 2, 1))
    w.set_threshold(0.25)
    assert w.threshold.tolist() == [0.25]
