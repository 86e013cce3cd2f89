import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from toys import tiny_net

from monai_aegis.attacks import (
    BIM,
    DIM,
    FGSM,
    MIM,
    PGD,
    PGDL2,
    TIM,
    BPDAWrapper,
    CrossEntropy,
    InputDiversity,
    IterativeAttack,
    LinfBall,
    make_attack,
)
from monai_aegis.attacks import engine as engine_module

EPS = 16 / 256


def _double(model):
    return copy.deepcopy(model).double()


def test_fgsm_is_one_signed_gradient_step(trained):
    model, x, y = trained
    target = (y + 1) % 3
    xg = x.clone().requires_grad_(True)
    loss = -F.cross_entropy(model(xg), target, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    expected = (x + EPS * g.sign()).clamp(0, 1)
    res = FGSM(model, eps=EPS)(x, y, target=target)
    assert torch.allclose(res.x_adv, expected, atol=1e-7)
    # untargeted ascends CE of the true label
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    assert torch.allclose(FGSM(model, eps=EPS)(x, y).x_adv, (x + EPS * g.sign()).clamp(0, 1), atol=1e-7)


def _ta():
    return pytest.importorskip("torchattacks")


@pytest.mark.parametrize("targeted", [True, False])
def test_pgd_matches_torchattacks(trained, targeted):
    ta = _ta()
    model, x, y = trained
    model, x = _double(model), x.double()
    target = (y + 1) % 3
    alpha, steps = 2 / 256, 10
    atk = ta.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=False)
    if targeted:
        atk.set_mode_targeted_by_label(quiet=True)
        ref = atk(x, target)
    else:
        ref = atk(x, y)
    ours = PGD(model, eps=EPS, steps=steps, step_size=alpha, random_start=False)(x, y, target if targeted else None)
    assert torch.allclose(ours.x_adv, ref, atol=1e-10)
    assert not torch.equal(ref, x)


def test_mim_matches_torchattacks(trained):
    ta = _ta()
    model, x, y = trained
    model, x = _double(model), x.double()
    target = (y + 2) % 3
    atk = ta.MIFGSM(model, eps=EPS, alpha=2 / 256, steps=10, decay=1.0)
    atk.set_mode_targeted_by_label(quiet=True)
    ref = atk(x, target)
    ours = MIM(model, eps=EPS, steps=10, step_size=2 / 256, decay=1.0)(x, y, target)
    assert torch.allclose(ours.x_adv, ref, atol=1e-10)


def test_dim_matches_torchattacks_with_the_same_seed(trained):
    """Our InputDiversity draws (size, pad offsets, coin) from the global RNG in torchattacks' order, so seeding
    both the same makes them apply identical transforms at every step (diversity_prob 0.5: both branches)."""
    ta = _ta()
    model, x, y = trained
    model, x = _double(model), x.double()
    target = (y + 1) % 3
    atk = ta.DIFGSM(model, eps=EPS, alpha=2 / 256, steps=10, decay=1.0, resize_rate=0.9, diversity_prob=0.5)
    atk.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(123)
    ref = atk(x, target)
    torch.manual_seed(123)
    ours = DIM(model, eps=EPS, steps=10, step_size=2 / 256, diversity_prob=0.5, resize_rate=0.9)(x, y, target)
    assert torch.allclose(ours.x_adv, ref, atol=1e-10)
    torch.manual_seed(124)  # and another seed gives another path: diversity does act
    other = DIM(model, eps=EPS, steps=10, step_size=2 / 256)(x, y, target)
    assert not torch.allclose(other.x_adv, ref, atol=1e-6)


def test_input_diversity_matches_torchattacks_transform():
    ta = _ta()
    model = tiny_net()
    atk = ta.DIFGSM(model, resize_rate=0.9, diversity_prob=0.7)
    ours = InputDiversity(prob=0.7, resize_rate=0.9)
    x = torch.rand(2, 3, 20, 20)
    for seed in range(6):
        torch.manual_seed(seed)
        ref = atk.input_diversity(x)
        torch.manual_seed(seed)
        assert torch.equal(ours(x), ref)


@pytest.mark.parametrize("name", ["FGSM", "BIM", "PGD", "MIM", "DIM", "TIM", "CW-Linf", "APGD-CE", "APGD-CW"])
def test_linf_attacks_stay_in_ball_and_range(trained, name):
    model, x, y = trained
    res = make_attack(name, model, steps=5) if name != "FGSM" else make_attack(name, model)
    out = res(x, y, target=(y + 1) % 3)
    assert float((out.x_adv - x).abs().max()) <= EPS
    assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1
    assert torch.allclose(out.linf, (out.x_adv - x).flatten(1).abs().amax(1))
    assert out.success.dtype == torch.bool and out.success.shape == y.shape
    assert torch.equal(out.predictions, out.logits.argmax(1))
    assert torch.equal(out.success, out.predictions == (y + 1) % 3)


@pytest.mark.parametrize("name", ["PGD-L2", "APGD-CE"])
def test_l2_attacks_stay_in_ball(trained, name):
    model, x, y = trained
    kw = {"norm": "L2", "eps": 0.5} if name == "APGD-CE" else {"eps": 0.5}
    out = make_attack(name, model, steps=5, **kw)(x, y)
    assert float(out.l2.max()) <= 0.5 + 1e-5
    assert float(out.x_adv.min()) >= 0 and float(out.x_adv.max()) <= 1


@pytest.mark.parametrize("memory_format", ["preserve", "channels_last"])
def test_custom_clip_range_and_mask(trained, memory_format):
    model, x, y = trained
    xs = x * 2 - 1  # data in [-1, 1]; the attack must not clip it back to [0, 1]
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    mask[..., 4:12, 4:12] = True
    res = PGD(model, eps=0.2, steps=5, clip=(-1.0, 1.0), mask=mask, memory_format=memory_format)(xs, y)
    assert res.x_adv.is_contiguous()
    assert float(res.x_adv.min()) >= -1 and float(res.x_adv.max()) <= 1
    assert float(res.x_adv.min()) < 0  # not clipped to [0, 1]
    assert float(res.linf.max()) <= 0.2
    outside = ~mask.expand_as(xs)
    assert torch.equal(res.x_adv[outside], xs[outside])
    assert float((res.x_adv - xs)[~outside].abs().max()) > 0
    # a per-call mask overrides the threat model's
    res2 = PGD(model, eps=0.2, steps=2, clip=(-1.0, 1.0))(xs, y, mask=~mask)
    assert torch.equal(res2.x_adv[~outside], xs[~outside])
    with pytest.raises(ValueError, match="values must lie in"):
        PGD(model)(xs, y)  # [-1, 1] data against the default [0, 1] clip


def test_targeted_attacks_beat_random_noise(trained):
    model, x, y = trained
    target = (y + 1) % 3
    noise = (x + EPS * torch.randn_like(x).sign()).clamp(0, 1)
    with torch.no_grad():
        noise_rate = (model(noise).argmax(1) == target).float().mean()
    for name in ("BIM", "PGD", "MIM", "CW-Linf"):
        rate = make_attack(name, model)(x, y, target).success_rate
        assert rate >= 0.75 and rate > noise_rate + 0.5, (name, rate, float(noise_rate))


def test_model_untouched_and_modes_restored():
    model = tiny_net()
    model.train()
    model.bn1.eval()  # mixed modes must come back exactly
    before = copy.deepcopy(model.state_dict())
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    for attack in (PGD(model, steps=3), make_attack("APGD-CE", model, steps=3), make_attack("CW-L2", model, steps=3)):
        attack(x, y, target=(y + 1) % 3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN running stats
    assert model.training and not model.bn1.training and model.conv1.training
    assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_rejects_inference_mode(trained):
    model, x, y = trained
    with torch.no_grad():
        res = PGD(model, steps=3)(x, y)
    assert float(res.linf.max()) > 0
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        PGD(model, steps=1)(x, y)


@pytest.mark.parametrize("channels", [1, 5])
def test_any_channel_count_and_3d(channels):
    model2d = tiny_net(in_channels=channels)
    x2 = torch.rand(3, channels, 12, 12)
    model3d = tiny_net(in_channels=channels, dims=3)
    x3 = torch.rand(2, channels, 8, 8, 8)
    for model, x in ((model2d, x2), (model3d, x3)):
        y = torch.zeros(x.shape[0], dtype=torch.long)
        for attack in (PGD(model, steps=2), DIM(model, steps=2, diversity_prob=1.0), TIM(model, steps=2, kernel_size=5),
                       PGDL2(model, steps=2, eps=0.3)):
            res = attack(x, y, target=torch.ones_like(y))
            assert res.x_adv.shape == x.shape
            assert float(res.linf.max()) <= attack.threat.eps + 1e-7 or isinstance(attack, PGDL2)
            assert float(res.linf.max()) > 0


def test_float64_and_device_follow_input(trained):
    model, x, y = trained
    res = PGD(_double(model), steps=2)(x.double(), y)
    assert res.x_adv.dtype == torch.float64 and res.logits.dtype == torch.float64
    assert res.x_adv.device == x.device


def test_restarts_keep_per_sample_best(trained):
    model, x, y = trained
    target = (y + 1) % 3
    torch.manual_seed(5)
    one = PGD(model, eps=8 / 256, steps=3)(x, y, target)
    torch.manual_seed(5)
    three = PGD(model, eps=8 / 256, steps=3, restarts=3)(x, y, target)
    assert bool((three.success | ~one.success).all())  # never worse per sample
    assert float(three.linf.max()) <= 8 / 256
    # samples successful in the first run keep that run's point
    assert torch.equal(three.x_adv[one.success], one.x_adv[one.success])


def test_keep_best_never_worse_than_last_iterate(trained):
    model, x, y = trained
    kw = dict(eps=6 / 256, steps=6, step_size=3 / 256, random_start=False)
    last = BIM(model, **kw)(x, y)
    best = BIM(model, keep_best=True, **kw)(x, y)
    assert bool((best.success | ~last.success).all())
    both_fail = ~best.success & ~last.success
    assert bool((best.objective[both_fail] >= last.objective[both_fail] - 1e-6).all())


def test_eot_averages_gradients_over_random_preprocessing(trained):
    model, x, y = trained

    class RandomScale(nn.Module):
        def forward(self, z):
            return z * (0.8 + 0.4 * torch.rand(z.shape[0], 1, 1, 1))

    pre = RandomScale()
    attack = IterativeAttack(model, LinfBall(EPS), CrossEntropy(), steps=1, preprocess=pre, eot_samples=3)
    fwd = attack._forward_fn(None)
    torch.manual_seed(3)
    grad, _, _, _ = attack._gradient(x, y, None, attack.objective, fwd)
    torch.manual_seed(3)
    grads = []
    for _ in range(3):
        xg = x.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(F.cross_entropy(model(pre(xg)), y, reduction="sum"), xg)[0])
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-6)


class _Quantize(torch.autograd.Function):
    """5-bit quantisation, straight-through backward (the BPDA identity proxy)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x * 31) / 31

    @staticmethod
    def backward(ctx, g):
        return g


class StraightThroughQuantizer(nn.Module):
    def forward(self, x):
        return _Quantize.apply(x)


class ZeroGradQuantizer(nn.Module):
    def forward(self, x):
        return torch.round(x * 31) / 31  # autograd: zero gradient almost everywhere


def test_bpda_beats_attacking_without_it(trained):
    model, x, y = trained
    target = (y + 1) % 3
    torch.manual_seed(1)
    with_bpda = PGD(model, steps=20, preprocess=StraightThroughQuantizer())(x, y, target)
    without = PGD(model, steps=20, preprocess=ZeroGradQuantizer())(x, y, target)
    assert with_bpda.success_rate >= 0.6
    assert with_bpda.success_rate > without.success_rate + 0.4
    # success is judged through the quantiser
    with torch.no_grad():
        pred = model(torch.round(with_bpda.x_adv * 31) / 31).argmax(1)
    assert torch.equal(with_bpda.success, pred == target)
    # the library wrapper behaves like the hand-written straight-through function
    torch.manual_seed(1)
    wrapped = PGD(model, steps=20, preprocess=BPDAWrapper(ZeroGradQuantizer()))(x, y, target)
    assert torch.equal(wrapped.x_adv, with_bpda.x_adv)


def test_bpda_wrapper_forward_exact_backward_proxy():
    quant = ZeroGradQuantizer()
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    out = BPDAWrapper(quant)(x)
    assert torch.equal(out, quant(x.detach()))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.ones_like(x))
    proxy = BPDAWrapper(quant, backward_module=lambda z: 3 * z)
    (g,) = torch.autograd.grad(proxy(x).sum(), x)
    assert torch.allclose(g, torch.full_like(x, 3.0))


def test_hooks_only_when_an_objective_needs_features(trained, monkeypatch):
    model, x, y = trained
    made = []
    real = engine_module.FeatureHooks

    def counting(*a, **k):
        made.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(engine_module, "FeatureHooks", counting)
    PGD(model, steps=1)(x, y)
    assert made == []
    guides = x[:3]
    make_attack("Fea", model, guides=guides, layer_names=["act1"], steps=1)(x, y, (y + 1) % 3)
    assert made == [("act1",)]
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # removed afterwards


def test_bad_arguments(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="eps"):
        PGD(model, eps=0)
    with pytest.raises(ValueError, match="eps"):
        PGDL2(model, eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        PGD(model, steps=0)
    with pytest.raises(ValueError, match="unknown norm"):
        make_attack("APGD-CE", model, norm="L1")
    with pytest.raises(ValueError, match="shape"):
        PGD(model, steps=1)(x, torch.zeros(len(y), 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        PGD(model, steps=1)(x, y[:-1])
    with pytest.raises(ValueError, match="target equals the label"):
        PGD(model, steps=1)(x, y, target=y)
    with pytest.raises(ValueError, match="target values must lie in"):
        PGD(model, steps=1)(x, y, target=torch.full_like(y, 7))
    with pytest.raises(ValueError, match="shape"):
        PGD(model, steps=1)(x[0], y[:1])
    with pytest.raises(TypeError, match="ThreatModel"):
        IterativeAttack(model, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        PGD(model, steps=1)(torch.full_like(x, float("nan")), y)


def test_untargeted_default_labels_are_clean_predictions(trained):
    model, x, y = trained
    res = PGD(model, steps=5)(x)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert torch.equal(res.success, res.predictions != pred)
    assert res.targeted is False and PGD(model, steps=1)(x, y, (y + 1) % 3).targeted is True


class _ViewNet(nn.Module):
    """Breaks on channels-last input (``.view`` needs contiguous memory)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 128 * 128, 2)

    def forward(self, x):
        return self.fc(x.view(x.shape[0], -1))


class _RawMemoryNet(nn.Module):
    """Silently wrong on channels-last input: reads raw memory as if it were NCHW (like a careless custom op)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 128 * 128, 2)

    def forward(self, x):
        raw = torch.as_strided(x, x.shape, (x[0].numel(), 128 * 128, 128, 1))
        return self.fc(raw.reshape(x.shape[0], -1))


def test_memory_format_auto_uses_channels_last_only_when_logits_agree(trained):
    model, x, y = trained
    assert PGD(model)._use_channels_last(x) is False  # 16 x 16: too small to gain
    x = F.interpolate(x, size=128, mode="nearest")  # large enough for "auto"
    attack = PGD(model, steps=3)
    rng = torch.get_rng_state()
    assert attack._use_channels_last(x) is True  # a conv net: same logits in both layouts
    assert torch.equal(torch.get_rng_state(), rng)  # the check consumes no randomness
    torch.manual_seed(0)
    fast = PGD(model, steps=5)(x, y)
    torch.manual_seed(0)
    plain = PGD(model, steps=5, memory_format="preserve")(x, y)
    assert fast.x_adv.is_contiguous()  # the result keeps the input's layout
    assert float((fast.x_adv != plain.x_adv).float().mean()) < 0.01  # float rounding only
    assert torch.equal(fast.success, plain.success)
    xs = torch.rand(4, 3, 128, 128)
    for net in (_ViewNet(), _RawMemoryNet()):
        assert PGD(net, steps=1)._use_channels_last(xs) is False
        torch.manual_seed(0)
        a = PGD(net, steps=2)(xs)
        torch.manual_seed(0)
        b = PGD(net, steps=2, memory_format="preserve")(xs)
        assert torch.equal(a.x_adv, b.x_adv)
    assert PGD(model, memory_format="channels_last")._use_channels_last(x.double())
    assert not PGD(model)._use_channels_last(x.double())  # auto: float32 CPU only
    with pytest.raises(ValueError, match="memory_format"):
        PGD(model, memory_format="nhwc")


class _ContiguousQuantizer(nn.Module):
    def forward(self, x):
        return _Quantize.apply(x).contiguous()  # NCHW out, whatever comes in


def test_classifier_sees_the_attack_layout_after_preprocessing(trained):
    model, x, y = trained
    x = F.interpolate(x[:4], size=128, mode="nearest")
    y = y[:4]
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    try:
        PGD(model, steps=2, preprocess=_ContiguousQuantizer())(x, y)
        assert seen and not any(seen[-3:])  # steps and final forward ran channels-last
        seen.clear()
        PGD(model, steps=2, preprocess=_ContiguousQuantizer(), memory_format="preserve")(x, y)
        assert all(seen)
    finally:
        handle.remove()


def test_bpda_through_real_jpeg_cushion(trained):
    """Through the real JPEG-80 Cushion: the BPDA attack succeeds, attacking with JPEG's true (zero) gradient
    does not, and success is judged on the JPEG-compressed input."""
    from monai_aegis.networks import CushionLayer, jpeg_compress

    model, x, y = trained
    target = (y + 1) % 3
    torch.manual_seed(1)
    with_bpda = PGD(model, steps=20, preprocess=CushionLayer("jpeg", quality=80))(x, y, target)

    class JpegNoBPDA(nn.Module):  # the true cushion with autograd's (absent) gradient through the codec
        def forward(self, z):
            return jpeg_compress(z.detach(), 80) + 0 * z

    torch.manual_seed(1)
    without = PGD(model, steps=20, preprocess=JpegNoBPDA())(x, y, target)
    assert with_bpda.success_rate >= 0.5
    assert with_bpda.success_rate > without.success_rate + 0.3
    with torch.no_grad():
        pred = model(jpeg_compress(with_bpda.x_adv, 80)).argmax(1)
    assert torch.equal(with_bpda.success, pred == target)


def _count_dtypes(model):
    """Forward hook recording the dtype of every convolution's output."""
    seen = []
    handles = [m.register_forward_hook(lambda mod, i, o: seen.append(o.dtype)) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    return seen, handles


def test_amp_runs_only_the_model_in_bfloat16(trained):
    """``amp``: the classifier runs in bfloat16, the perturbation, its budget and the result stay float32."""
    model, x, y = trained
    seen, handles = _count_dtypes(model)
    try:
        torch.manual_seed(0)
        low = PGD(model, eps=EPS, steps=10, amp="bf16")(x, y)
        assert seen and set(seen) == {torch.bfloat16}
        seen.clear()
        torch.manual_seed(0)
        full = PGD(model, eps=EPS, steps=10)(x, y)
        assert set(seen) == {torch.float32}
    finally:
        for h in handles:
            h.remove()
    assert low.x_adv.dtype == torch.float32 and low.logits.dtype == torch.float32
    assert float((low.x_adv - x).abs().max()) <= EPS + 1e-6  # the budget is exact
    assert float(low.x_adv.min()) >= 0 and float(low.x_adv.max()) <= 1
    # as strong as in full precision on this model (both fool nearly every image)
    assert float(low.success.float().mean()) >= float(full.success.float().mean()) - 0.1
    assert float(low.success.float().mean()) > 0.8


def test_amp_spelling_is_checked_at_construction(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match="amp must be"):
        PGD(model, eps=EPS, amp="int8")


def test_start_points_replace_the_random_start(trained):
    """``start``: the first run begins at the given points, projected onto the ball; only iterative attacks take
    them, shaped like x."""
    model, x, y = trained
    x, y = x[:8], y[:8]
    push = torch.where(x > 0.5, -1.0, 1.0)
    inside = (x + 0.5 * EPS * push).clamp(0, 1)
    tiny = PGD(model, eps=EPS, steps=1, step_size=1e-7, random_start=True)
    assert torch.allclose(tiny(x, y, start=inside).x_adv, inside, atol=1e-6)  # kept (one negligible step)
    outside = (x + 3 * EPS * push).clamp(0, 1)
    res = tiny(x, y, start=outside)
    assert float((res.x_adv - x).abs().max()) <= EPS + 1e-6  # projected onto the ball
    assert torch.allclose(res.x_adv, (x + EPS * push).clamp(0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="shape of x"):
        tiny(x, y, start=inside[:4])
    with pytest.raises(ValueError, match="does not take start points"):
        make_attack("CW-L2", model, steps=2, binary_search_steps=1)(x, y, start=inside)
