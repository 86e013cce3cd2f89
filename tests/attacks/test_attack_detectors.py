"""Detector-aware attacks (WB, WB_d, selective and orthogonal PGD) against a stand-in Shield."""

import pytest
import torch
from torch import nn

from monai_aegis.attacks import PGD, DetectorGate, OrthogonalPGD, SelectivePGD, WhiteBox, WhiteBoxDecay
from monai_aegis.networks import FeatureHooks

EPS = 16 / 256


def _undetected_success(model, gate, x_adv, target, preprocess=None):
    with torch.no_grad():
        z = preprocess(x_adv) if preprocess is not None else x_adv
        logits, feats = FeatureHooks(model, gate.layer_names).run(z)
    return (logits.argmax(1) == target) & gate.accepted(logits, feats)


def test_detector_accepts_clean_rejects_plain_pgd(trained, detector):
    model, x, y = trained
    gate = DetectorGate(detector, 0.0)
    with torch.no_grad():
        logits, feats = FeatureHooks(model, gate.layer_names).run(x)
    assert gate.accepted(logits, feats).float().mean() >= 0.8
    t = (y + 1) % 3
    torch.manual_seed(0)
    pgd = PGD(model, steps=20)(x, y, t)
    assert pgd.success_rate >= 0.9
    assert _undetected_success(model, gate, pgd.x_adv, t).float().mean() <= 0.25


@pytest.mark.parametrize("attack_cls, margin", [(SelectivePGD, 0.3), (OrthogonalPGD, 0.2)])
def test_selective_and_orthogonal_pgd_evade_the_detector(trained, detector, attack_cls, margin):
    model, x, y = trained
    t = (y + 1) % 3
    gate = DetectorGate(detector, 0.0)
    torch.manual_seed(0)
    pgd = PGD(model, steps=20)(x, y, t)
    torch.manual_seed(0)
    res = attack_cls(model, detector, threshold=0.0, steps=20)(x, y, t)
    base = _undetected_success(model, gate, pgd.x_adv, t).float().mean()
    ours = _undetected_success(model, gate, res.x_adv, t)
    assert float(ours.float().mean()) > float(base) + margin
    # the result's bookkeeping agrees with an independent evaluation
    assert torch.equal(res.success_undetected, ours)
    assert float(res.linf.max()) <= EPS


def test_per_class_thresholds(trained, detector):
    model, x, y = trained
    t = (y + 1) % 3
    strict = torch.full((3,), 1e6)
    res = SelectivePGD(model, detector, threshold=strict, steps=3)(x, y, t)
    assert not bool(res.accepted.any())  # nothing passes an impossible threshold
    with pytest.raises(ValueError, match="threshold"):
        SelectivePGD(model, detector, threshold=torch.zeros(2, 2))


class StraightThroughQuantizer(nn.Module):
    def forward(self, x):
        q = torch.round(x * 31) / 31
        return x + (q - x).detach()


def test_white_box_through_preprocessing_beats_plain_pgd(trained, detector):
    model, x, y = trained
    t = (y + 1) % 3
    pre = StraightThroughQuantizer()
    gate = DetectorGate(detector, 0.0)
    torch.manual_seed(0)
    pgd = PGD(model, steps=30, preprocess=pre)(x, y, t)
    torch.manual_seed(0)
    wb = WhiteBox(model, detector, preprocess=pre, threshold=0.0, steps=30)(x, y, t)
    base = _undetected_success(model, gate, pgd.x_adv, t, pre).float().mean()
    ours = _undetected_success(model, gate, wb.x_adv, t, pre)
    assert float(ours.float().mean()) > float(base) + 0.3
    assert torch.equal(wb.success_undetected, ours)
    # WB_d: same attack with the step size x0.1 from step 50 on
    wbd = WhiteBoxDecay(model, detector, preprocess=pre, steps=5)
    assert wbd.schedule.at == 50 and wbd.schedule.factor == pytest.approx(0.1) and wbd.steps == 5
    assert WhiteBox(model, detector).steps == 100 and WhiteBox(model, detector).random_start
