import pytest
import torch
import torch.nn.functional as F

from monai_aegis.attacks import (
    APGD,
    PGD,
    AutoStepSize,
    ConstantStep,
    GradientSmoothing,
    InputDiversity,
    L2Ball,
    L2Step,
    LambdaStep,
    LinfBall,
    MomentumStep,
    SignStep,
    StepDecay,
    make_attack,
)
from monai_aegis.attacks.steps import as_schedule, make_step_rule


def test_step_rules():
    g = torch.randn(3, 2, 4, 4)
    assert torch.equal(SignStep()(g, None, LinfBall(0.1))[0], g.sign())
    d, _ = L2Step()(g, None, L2Ball(0.1))
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.ones(3))
    rule = MomentumStep(decay=0.5)
    state = rule.init(g)
    d1, state = rule(g, state, LinfBall(0.1))
    m1 = g / g.abs().mean((1, 2, 3), keepdim=True)
    assert torch.allclose(state, m1) and torch.equal(d1, m1.sign())
    g2 = torch.randn_like(g)
    d2, state = rule(g2, state, LinfBall(0.1))
    m2 = g2 / g2.abs().mean((1, 2, 3), keepdim=True) + 0.5 * m1
    assert torch.allclose(state, m2) and torch.equal(d2, m2.sign())
    d3, _ = MomentumStep()(g, MomentumStep().init(g), L2Ball(0.1))  # L2 ball: unit-L2 direction
    assert torch.allclose(d3.flatten(1).norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="unknown step rule"):
        make_step_rule("adam")


def test_schedules():
    assert ConstantStep().size(99, ConstantStep().start(0.1, 100, torch.zeros(1))) == 0.1
    dec = StepDecay(at=50, factor=0.1)
    base = dec.start(0.2, 100, torch.zeros(1))
    assert dec.size(49, base) == 0.2 and dec.size(50, base) == pytest.approx(0.02)
    lam = as_schedule(lambda i, b: b / (i + 1))
    assert isinstance(lam, LambdaStep) and lam.size(3, lam.start(1.0, 10, torch.zeros(1))) == 0.25
    with pytest.raises(ValueError):
        StepDecay(at=-1)


def test_auto_step_size_checkpoints_follow_the_reference():
    """Checkpoints at the reference's evaluations (k = 22, 19, 16, ... >= 6 for 100 steps); a steadily
    increasing objective keeps the step, a flat one halves it and restarts from the best point."""
    sched = AutoStepSize()
    x0 = torch.zeros(2, 1, 2, 2)
    st = sched.start(1.0, 100, x0)
    checks = []
    for i in range(101):
        v = torch.tensor([float(i), 0.0])  # sample 0 improves every step, sample 1 is flat
        out = sched.observe(i, st, v, torch.tensor([float(i), 0.0]))
        if out is not None:
            checks.append(i)
            assert out.tolist() == [False, True]
    assert checks == [22, 41, 57, 70, 80, 87, 93, 99]
    assert st["eta"].tolist() == [1.0, 0.5 ** len(checks)]


def test_wb_d_step_decay_changes_the_path(trained):
    model, x, y = trained
    torch.manual_seed(0)
    a = PGD(model, steps=4, step_size=0.01, schedule=StepDecay(at=2, factor=0.1))(x, y)
    torch.manual_seed(0)
    b = PGD(model, steps=2, step_size=0.01)(x, y)
    # after two full steps, two tenth-size steps move at most 2 * 0.001 per pixel
    assert float((a.x_adv - b.x_adv).abs().max()) <= 0.002 + 1e-6


def test_apgd_at_least_as_strong_as_pgd(trained):
    model, x, y = trained
    t = (y + 1) % 3
    for eps in (2 / 256, 4 / 256):
        torch.manual_seed(0)
        pgd = PGD(model, eps=eps, steps=10)(x, y)
        torch.manual_seed(0)
        apgd = make_attack("APGD-CE", model, eps=eps, steps=10)(x, y)
        assert apgd.success.sum() >= pgd.success.sum()
        assert float(apgd.objective.mean()) >= float(pgd.objective.mean())  # higher CE
        torch.manual_seed(0)
        pgd_t = PGD(model, eps=eps, steps=10, objective=make_attack("APGD-CW", model).objective)(x, y, t)
        torch.manual_seed(0)
        apgd_t = make_attack("APGD-CW", model, eps=eps, steps=10)(x, y, t)
        assert apgd_t.success.sum() >= pgd_t.success.sum()
        assert float(apgd_t.objective.mean()) >= float(pgd_t.objective.mean())


def test_apgd_l2_and_defaults(trained):
    model, x, y = trained
    a = APGD(model, norm="L2", steps=5)
    assert isinstance(a.threat, L2Ball) and a.threat.eps == pytest.approx(8 / 256) and a.step_size == 2 * 8 / 256
    res = a(x, y)
    assert float(res.l2.max()) <= 8 / 256 + 1e-5
    with pytest.raises(ValueError, match="unknown loss"):
        APGD(model, loss="dlr")


def test_gradient_smoothing_equals_full_kernel_convolution():
    sm = GradientSmoothing(kernel_size=7, nsig=3)
    g = torch.randn(2, 4, 12, 12, dtype=torch.float64)
    t = torch.linspace(-3, 3, 7, dtype=torch.float64)
    k1 = torch.exp(-t**2 / 2)
    k2 = torch.outer(k1, k1)
    k2 = k2 / k2.sum()
    ref = F.conv2d(g, k2.expand(4, 1, 7, 7), padding="same", groups=4)
    assert torch.allclose(sm(g), ref, atol=1e-12)
    g3 = torch.randn(1, 2, 6, 7, 8, dtype=torch.float64)
    k3 = k1[:, None, None] * k1[None, :, None] * k1[None, None, :]
    k3 = k3 / k3.sum()
    ref3 = F.conv3d(g3, k3.expand(2, 1, 7, 7, 7), padding="same", groups=2)
    assert torch.allclose(sm(g3), ref3, atol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        GradientSmoothing(kernel_size=4)


def test_gradient_smoothing_matches_torchattacks_kernel():
    ta = pytest.importorskip("torchattacks")
    pytest.importorskip("scipy")
    from monai_aegis.attacks.presets import TIM

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    kernel = torch.from_numpy(ta.TIFGSM(net, len_kernel=15, nsig=3).kernel_generation()).double()
    g = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ref = F.conv2d(g, kernel, padding="same", groups=3)
    assert torch.allclose(TIM(net).grad_smoothing(g), ref, atol=1e-7)  # their kernel is float32


def test_input_diversity_shapes():
    x2, x3 = torch.rand(2, 1, 20, 20), torch.rand(2, 3, 10, 10, 10)
    assert torch.equal(InputDiversity(prob=0.0)(x2), x2)
    for x in (x2, x3):
        out = InputDiversity(prob=1.0)(x)
        assert out.shape == x.shape and not torch.equal(out, x)
        assert bool((out == 0).any())  # zero padding somewhere
        big = InputDiversity(prob=1.0, resize_rate=1.1)(x)
        assert big.shape[2:] == tuple(int(s * 1.1) for s in x.shape[2:])
    with pytest.raises(ValueError, match="prob"):
        InputDiversity(prob=1.5)
