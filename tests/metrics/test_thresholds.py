"""check_threshold / per_sample_threshold / accept_mask: the one decision rule of the Shield, its training gate, the
baselines and the evaluation (score higher = more adversarial; accepted iff score <= the threshold of the predicted
class; for the Shield, score = -clean logit and score threshold = -threshold)."""

import pytest
import torch

from monai_aegis.metrics import accept_mask, check_threshold, per_sample_threshold, threshold_at_tnr


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


def test_accept_mask_is_the_rule_threshold_at_tnr_calibrates():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(200, generator=g)
    t = threshold_at_tnr(clean, 0.9)
    assert accept_mask(clean, t).float().mean().item() == pytest.approx(0.9, abs=0.005)
    assert accept_mask(torch.tensor([t]), t).item() and not accept_mask(torch.tensor([t + 1e-4]), t).item()
    scores, pred = torch.tensor([0.5, 0.5, 2.0]), torch.tensor([0, 1, 1])
    assert accept_mask(scores, torch.tensor([0.0, 1.0]), pred).tolist() == [False, True, False]
    assert accept_mask(scores, torch.tensor([1.0, 0.4, 2.0])).tolist() == [True, False, True]  # per sample
    assert accept_mask(scores, float("inf")).all()
    with pytest.raises(ValueError, match="needs the predicted classes"):
        accept_mask(scores, torch.tensor([0.0, 1.0]))


def test_the_shield_and_a_baseline_share_one_convention():
    from monai_aegis.networks import Shield

    logits, pred = torch.tensor([[2.0, -1.0], [0.5, 3.0], [-2.0, 0.0]]), torch.tensor([0, 1, 0])
    score = Shield.score(logits, pred)
    assert score.tolist() == [-2.0, -3.0, 2.0]  # higher = more adversarial
    clean_logit_thr = torch.tensor([1.0, 3.5])  # accept iff clean logit >= threshold ...
    expected = Shield.select(logits, pred) >= per_sample_threshold(clean_logit_thr, pred)
    assert torch.equal(accept_mask(score, -clean_logit_thr, pred), expected)  # ... iff score <= -threshold
    assert expected.tolist() == [True, False, False]
