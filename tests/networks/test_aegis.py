import pytest
import torch
from torch import nn

from monai_aegis.attacks import make_aegis_attack
from monai_aegis.networks import AegisWrapper, CushionLayer, Shield, cushion_from_name


class Net(nn.Module):
    def __init__(self, classes=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.deep(self.stem(x)).mean((2, 3)))


def _aegis(classes=2, cushion="jpeg80"):
    net = Net(classes).eval()
    cush = cushion_from_name(cushion) if cushion else None
    shield = Shield.from_classifier(net, ["stem", "deep"], (1, 16, 16), classes, width=4, hidden=8, preprocess=cush)
    return AegisWrapper(net, shield, cushion=cush)


def test_plain_wrapper_reproduces_classifier():
    net = Net().eval()
    x = torch.rand(4, 1, 16, 16)
    w = AegisWrapper(net)
    assert torch.equal(w(x), net(x))
    out = w.screen(x)
    assert torch.equal(out["logits"], net(x)) and out["accept"].all()


def test_forward_is_classifier_on_cushioned_input():
    w = _aegis()
    x = torch.rand(4, 1, 16, 16)
    assert torch.equal(w(x), w.classifier(w.cushion(x)))
    assert not torch.equal(w(x), w.classifier(x))


def test_classifier_stays_in_eval_mode():
    w = _aegis()
    w.train()
    assert w.training and w.shield.training and not w.classifier.training
    bn = w.classifier.stem[1]
    before = bn.running_mean.clone()
    w(torch.rand(4, 1, 16, 16))
    assert torch.equal(bn.running_mean, before)


def test_screen_outputs_and_threshold_required():
    w = _aegis()
    x = torch.rand(5, 1, 16, 16)
    with pytest.raises(RuntimeError, match="calibrate"):
        w.screen(x)
    w.set_threshold(torch.tensor([0.0, 0.1]))
    out = w.screen(x)
    assert set(out) >= {"logits", "probs", "pred", "shield_logits", "shield_logit", "score", "threshold", "accept"}
    s = out["shield_logits"].gather(1, out["pred"][:, None])[:, 0]
    assert torch.equal(out["shield_logit"], s) and torch.equal(out["score"], -s)
    assert torch.equal(out["accept"], s >= torch.tensor([0.0, 0.1])[out["pred"]])
    assert torch.equal(w.score_threshold, -w.threshold)
    assert torch.equal(out["accept"], out["score"] <= w.score_threshold[out["pred"]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        w.screen(x * 255)
    with pytest.raises(ValueError, match="2 entries"):
        w.set_threshold(torch.zeros(3))


@pytest.mark.parametrize("per_class", [True, False])
def test_calibration_hits_tnr_on_held_out_data(per_class):
    torch.manual_seed(0)
    w = _aegis(classes=3, cushion=None)
    calib, held_out = torch.rand(3000, 1, 16, 16), torch.rand(3000, 1, 16, 16)
    thr = w.calibrate(calib, tnr=0.9, per_class=per_class, batch_size=500)
    assert thr.numel() == (3 if per_class else 1)
    assert w.calibration["accepted_fraction"] == pytest.approx(0.9, abs=0.01)
    with torch.no_grad():
        out = w.screen(held_out)
    assert out["accept"].float().mean() == pytest.approx(0.9, abs=0.03)
    if per_class:  # each predicted class accepts ~90% of its clean images
        for y in out["pred"].unique():
            sel = out["pred"] == y
            if sel.sum() > 300:
                assert out["accept"][sel].float().mean() == pytest.approx(0.9, abs=0.05)


def test_calibration_small_class_falls_back_to_global(caplog):
    w = _aegis(cushion=None)
    with caplog.at_level("WARNING"):
        w.calibrate(torch.rand(30, 1, 16, 16), min_per_class=1000)
    assert w.calibration["fallback_classes"] == [0, 1]
    assert "classes [0, 1] had fewer than 1000 clean predictions among 30 images" in caplog.text
    assert w.threshold[0] == w.threshold[1]
    with pytest.raises(ValueError, match="tnr"):
        w.calibrate(torch.rand(8, 1, 16, 16), tnr=1.5)


def test_save_load_roundtrip(tmp_path):
    w = _aegis()
    w.calibrate(torch.rand(64, 1, 16, 16))
    x = torch.rand(6, 1, 16, 16)
    ref = w.screen(x)
    w.save(tmp_path / "aegis.pt")
    loaded = AegisWrapper.load(tmp_path / "aegis.pt", Net())
    out = loaded.screen(x)
    for k in ("logits", "shield_logits", "accept", "threshold"):
        assert torch.equal(out[k], ref[k]), k
    assert isinstance(loaded.cushion, CushionLayer) and loaded.cushion.name == "jpeg80"
    torch.load(tmp_path / "aegis.pt", weights_only=True)  # plain tensors and Python values only


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        AegisWrapper.load(tmp_path / "missing.pt", Net())
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an AegisWrapper checkpoint"):
        AegisWrapper.load(tmp_path / "other.pt", Net())
    _aegis().save(tmp_path / "a.pt")
    with pytest.raises(ValueError, match="does not match"):
        AegisWrapper.load(tmp_path / "a.pt", Net(classes=3))


def test_constructor_errors():
    net = Net()
    shield = Shield.from_classifier(net, ["stem", "deep"], (1, 16, 16), 2)
    with pytest.raises(ValueError, match="differ"):
        AegisWrapper(net, shield, layer_names=["stem"])
    with pytest.raises(ValueError, match="unknown layer"):
        AegisWrapper(net, layer_names=["stemm"])
    w = AegisWrapper(net, shield, cushion=CushionLayer(lambda t: t.clamp(0.1, 0.9)))
    with pytest.raises(ValueError, match="user callable"):
        w.save("unused.pt")


def test_calibrated_thresholds_per_class_and_fallback():
    from monai_aegis.networks import calibrated_thresholds

    scores = torch.cat([torch.arange(30.0), 100 + torch.arange(5.0)])
    pred = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(5, dtype=torch.long)])
    thr, info = calibrated_thresholds(scores, pred, 2, tnr=0.9, min_per_class=20)
    assert info["fallback_classes"] == [1] and thr.shape == (2,)
    assert float(thr[0]) == 3.0  # 27 of 30 class-0 scores are >= 3
    assert float(thr[1]) == float(calibrated_thresholds(scores, pred, 2, 0.9, per_class=False)[0])
    assert info["accepted_fraction"] == pytest.approx(float((scores >= thr[pred]).float().mean()))
    with pytest.raises(ValueError, match="tnr"):
        calibrated_thresholds(scores, pred, 2, tnr=1.0)


def test_screen_checks_the_input_it_was_built_for(tmp_path):
    """Wrong rank, channels, size or integer dtype: one clear ValueError each; float64 / float16 are converted."""
    w = _aegis()
    w.input_shape = (1, 16, 16)
    w.set_threshold(0.0)
    cases = {
        "rank": (torch.rand(1, 1, 4, 16, 16), r"shape \(B, C, H, W\)"),
        "channels": (torch.rand(2, 3, 16, 16), "1 channel"),
        "size": (torch.rand(2, 1, 32, 32), r"built and calibrated for \(1, 16, 16\).*resize"),
        "tiny": (torch.rand(2, 1, 2, 2), r"built and calibrated for"),
        "integer": (torch.randint(0, 255, (2, 1, 16, 16)), "integer dtype"),
        "range": (torch.rand(2, 1, 16, 16) * 255, r"\[0, 1\]"),
    }
    for name, (x, msg) in cases.items():
        with pytest.raises(ValueError, match=msg):
            w.screen(x)
    x = torch.rand(3, 1, 16, 16)
    ref = w.screen(x)
    for dtype in (torch.float64, torch.float16):
        out = w.screen(x.to(dtype))
        assert out["logits"].dtype == torch.float32 and out["pred"].shape == (3,)
    assert torch.allclose(w.screen(x.double())["logits"], ref["logits"], atol=1e-5)
    w.save(tmp_path / "w.pt")
    assert AegisWrapper.load(tmp_path / "w.pt", Net().eval()).input_shape == (1, 16, 16)
    # without a recorded shape the channel count still comes from the classifier's first convolution
    plain = AegisWrapper(Net().eval())
    with pytest.raises(ValueError, match="1 channel"):
        plain.screen(torch.rand(2, 3, 16, 16))
    assert plain.screen(torch.rand(2, 1, 24, 24))["accept"].all()


def test_top_level_exports():
    import monai_aegis
    from monai_aegis import AegisWrapper as TopLevel
    from monai_aegis import Cushion, build_aegis

    assert TopLevel is AegisWrapper and callable(build_aegis) and Cushion.__module__.startswith("monai_aegis.transforms")
    assert {"AegisWrapper", "Cushion", "build_aegis", "transforms"} <= set(dir(monai_aegis))
    with pytest.raises(AttributeError, match="no attribute"):
        monai_aegis.NotAThing  # noqa: B018


def test_amp_wrapper_runs_the_classifier_in_bfloat16(tmp_path):
    """``amp``: classifier in bfloat16, logits / features / Shield / Cushion in float32; screen and attacks built
    from the wrapper follow it; a saved wrapper loads in the precision asked for (a runtime choice)."""
    torch.manual_seed(0)
    w = _aegis()
    x = torch.rand(6, 1, 16, 16)
    with torch.no_grad():
        full_logits, full_feats = w.forward_features(x)
        w.calibrate(torch.rand(24, 1, 16, 16), min_per_class=1)
    low = AegisWrapper(w.classifier, w.shield, cushion=w.cushion, threshold=w.threshold, amp="bf16")
    with torch.no_grad():
        logits, feats = low.forward_features(x)
        out = low.screen(x)
    assert logits.dtype == torch.float32 and all(f.dtype == torch.float32 for f in feats.values())
    assert not torch.equal(logits, full_logits) and torch.allclose(logits, full_logits, atol=0.05, rtol=0.05)
    assert all(torch.allclose(feats[k], full_feats[k], atol=0.05, rtol=0.05) for k in feats)
    assert out["shield_logits"].dtype == torch.float32 and torch.equal(out["logits"], logits)
    assert make_aegis_attack("PGD", low, eps=8 / 256, steps=2).amp == "bf16"
    path = tmp_path / "aegis.pt"
    low.save(path)
    assert AegisWrapper.load(path, Net().eval()).amp is None
    assert AegisWrapper.load(path, Net().eval(), amp="bf16").amp == "bf16"
    with pytest.raises(ValueError, match="amp must be"):
        AegisWrapper(w.classifier, amp="half")


@pytest.mark.parametrize("inputs", ["input", "features"])
def test_shield_features_match_the_hooked_pass_and_skip_the_classifier_for_input_shields(inputs):
    from monai_aegis.networks import build_aegis

    w = build_aegis(Net().eval(), (1, 16, 16), 2, ["stem", "deep"], "jpeg80", shield_width=4, shield_hidden=8,
                    shield_inputs=inputs, seed=0)
    calls = []
    handle = w.classifier.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(3, 1, 16, 16)
    feats = w.shield_features(x)
    n_calls = len(calls)
    _, hooked = w.forward_features(x)
    handle.remove()
    assert list(feats) == list(hooked) == list(w.layer_names)
    assert all(torch.equal(feats[k], hooked[k]) for k in feats)
    assert n_calls == (0 if inputs == "input" else 1)  # the image-only Shield never runs the classifier
