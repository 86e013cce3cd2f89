"""The joint objective, APGD-Joint, the fooled-iterate tracker and the gradient-free Square attack."""

import pytest
import torch

from monai_aegis.attacks import (
    PGD,
    DetectorGate,
    JointAPGD,
    JointMargin,
    SquareAttack,
    classifier_margin,
    make_attack,
    square_window_fraction,
)
from monai_aegis.networks import FeatureHooks

EPS = 16 / 256


def _system(model, gate, x):
    with torch.no_grad():
        logits, feats = FeatureHooks(model, gate.layer_names).run(x)
    return logits, feats


def test_margins_and_joint_objective(trained, detector):
    model, x, y = trained
    t = (y + 1) % 3
    gate = DetectorGate(detector, torch.tensor([0.5, -0.5, 0.0]))
    logits, feats = _system(model, gate, x)
    m_c = classifier_margin(logits, y, t)
    assert torch.equal(m_c > 0, logits.argmax(1) == t)
    m_d = gate.margin(logits, feats, t)
    assert torch.allclose(m_d, detector(feats).gather(1, t[:, None])[:, 0] - gate.threshold[t])
    assert torch.allclose(gate.system_margin(logits, feats, y, t), torch.minimum(m_c, m_d))
    j = JointMargin(gate, lam=0.5, kappa=1.0, detector_kappa=2.0)(logits, feats, y, t)
    assert torch.allclose(j, m_c.clamp_max(1.0) + 0.5 * m_d.clamp_max(2.0))
    assert j.max() <= 1.0 + 0.5 * 2.0 + 1e-6
    with pytest.raises(ValueError, match="lam"):
        JointMargin(gate, lam=0.0)


def test_joint_apgd_fools_and_passes_the_detector_where_pgd_does_not(trained, detector):
    model, x, y = trained
    t = (y + 1) % 3
    gate = DetectorGate(detector, 0.0)
    torch.manual_seed(0)
    pgd = PGD(model, steps=20, detector_gate=gate)(x, y, t)
    torch.manual_seed(0)
    joint = JointAPGD(model, detector, 0.0, lam=1.0, steps=50)(x, y, t)
    assert float((joint.x_adv - x).abs().max()) <= EPS
    logits, feats = _system(model, gate, joint.x_adv)
    # the reported "fooled and accepted" is that of the returned point
    assert torch.equal(joint.success_undetected, (logits.argmax(1) == t) & gate.accepted(logits, feats))
    assert joint.success_undetected.float().mean() > pgd.success_undetected.float().mean() + 0.3
    assert type(make_attack("apgd-joint", model, detector=detector)) is JointAPGD


def test_fooled_tracker_keeps_the_fooled_iterate_with_the_largest_detector_margin(trained, detector):
    model, x, y = trained
    t = (y + 1) % 3
    gate = DetectorGate(detector, 1e6)  # nothing is ever accepted: the ranking alone cannot find the best fooled point
    torch.manual_seed(0)
    res = PGD(model, steps=15, detector_gate=gate, keep_best=True)(x, y, t)
    fx, fm = res.info["fooled_x"], res.info["fooled_margin"]
    assert fx.shape == x.shape and fm.shape == (x.shape[0],)
    fooled = torch.isfinite(fm)
    assert fooled.any() and not res.success_undetected.any()
    logits, feats = _system(model, gate, fx)
    assert torch.equal(logits.argmax(1)[fooled], t[fooled])
    margin = gate.scores(logits, feats) - gate.threshold_for(logits.argmax(1), logits)
    assert torch.allclose(margin[fooled], fm[fooled], atol=1e-4)
    assert float((fx - x).abs().max()) <= EPS


def test_square_attack_on_the_classifier(trained):
    model, x, y = trained
    t = (y + 1) % 3
    res = SquareAttack(model, eps=EPS, queries=300, seed=1)(x, y, t)
    assert float((res.x_adv - x).abs().max()) <= EPS and float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert res.success.float().mean() >= 0.5
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) == t, res.success)
    q = res.info["queries"]
    assert int(q[res.success].max()) < 300 and bool((q[~res.success] == 300).all())  # failures used the budget
    again = SquareAttack(model, eps=EPS, queries=300, seed=1)(x, y, t)
    assert torch.equal(again.x_adv, res.x_adv)  # its own generator: reproducible whatever the global RNG


def test_square_attack_with_a_detector_gate_optimises_the_system_margin(trained, detector):
    model, x, y = trained
    t = (y + 1) % 3
    gate = DetectorGate(detector, 0.0)
    plain = SquareAttack(model, eps=EPS, queries=300, seed=0)(x, y, t)
    gated = SquareAttack(model, eps=EPS, queries=300, seed=0, detector_gate=gate)(x, y, t)
    logits, feats = _system(model, gate, gated.x_adv)
    assert torch.equal(gated.success_undetected, (logits.argmax(1) == t) & gate.accepted(logits, feats))
    plain_undetected = (plain.predictions == t) & gate.accepted(*_system(model, gate, plain.x_adv))
    assert gated.success_undetected.sum() > plain_undetected.sum()  # it searches for accepted points, not just fooled


def test_square_schedule_and_checks(trained):
    model, x, y = trained
    assert square_window_fraction(0.8, 0, 1000) == 0.8
    assert square_window_fraction(0.8, 999, 1000) == pytest.approx(0.8 / 512)
    sizes = [square_window_fraction(0.8, q, 1000) for q in range(1000)]
    assert all(b <= a for a, b in zip(sizes, sizes[1:]))
    with pytest.raises(ValueError, match="queries"):
        SquareAttack(model, queries=0)
    with pytest.raises(ValueError, match="p_init"):
        SquareAttack(model, p_init=1.5)
    with pytest.raises(ValueError, match="2-D images"):
        SquareAttack(model)(torch.rand(2, 3, 4, 8, 8))
