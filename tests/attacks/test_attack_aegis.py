"""Attacks against the real Shield / AegisWrapper interface (the defence the engine judges)."""

import pytest
import torch
from torch import nn

from monai_aegis.attacks import DetectorLogit, make_aegis_attack
from monai_aegis.networks import AegisWrapper, FeatureHooks, Shield


class StraightThroughQuantizer(nn.Module):
    def forward(self, x):
        q = torch.round(x * 31) / 31
        return x + (q - x).detach()


@pytest.fixture
def aegis(trained):
    model, x, y = trained
    shield = Shield.from_classifier(model, ["act1", "act2"], (3, 16, 16), num_classes=3, width=4, hidden=8)
    with torch.no_grad():
        _, feats = FeatureHooks(model, shield.layer_names).run(x)
    shield.fit_input_stats(feats).eval()
    wrapper = AegisWrapper(model, shield, cushion=StraightThroughQuantizer())
    with torch.no_grad():
        logits, feats = wrapper.forward_features(x)
        scores = Shield.select(shield(feats), logits.argmax(1))
    wrapper.set_threshold(scores.median())  # accepts about half the clean images
    return wrapper


def test_detector_logit_reads_the_shield(trained, aegis):
    model, x, y = trained
    obj = DetectorLogit(aegis.shield)
    assert obj.layer_names == ("act1", "act2")
    logits, feats = FeatureHooks(model, obj.layer_names).run(x)
    t = (y + 1) % 3
    assert torch.allclose(obj(logits, feats, y, t), Shield.select(aegis.shield(feats), t))


def test_attacks_on_the_wrapper_report_its_screening(trained, aegis):
    model, x, y = trained
    t = (y + 1) % 3
    torch.manual_seed(0)
    pgd = make_aegis_attack("PGD", aegis, steps=20)(x, y, t)
    torch.manual_seed(0)
    wb = make_aegis_attack("WB", aegis, steps=20)(x, y, t)
    for res in (pgd, wb):
        screen = aegis.screen(res.x_adv)
        assert torch.equal(res.accepted, screen["accept"])
        assert torch.equal(res.success, screen["pred"] == t)
    assert wb.success_undetected.float().mean() > pgd.success_undetected.float().mean() + 0.3
    with pytest.raises(ValueError, match="Shield and a threshold"):
        make_aegis_attack("SPGD", AegisWrapper(model))
    # without a Shield, plain attacks still work (no gate)
    assert make_aegis_attack("FGSM", AegisWrapper(model))(x, y).accepted is None
