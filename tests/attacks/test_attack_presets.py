import pytest
import torch
from toys import make_data, tiny_net, train

from monai_aegis.attacks import (
    ATTACK_NAMES,
    PGD,
    Attack,
    CarliniWagnerL2,
    GaussianFeatureModel,
    IterativeAttack,
    SquareAttack,
    TransferAttack,
    make_attack,
)


def _extras(name, model, x, y, detector):
    key = name.lower()
    if key == "tf":
        return {"source_model": model}
    if key == "fea":
        return {"guides": x[:3], "layer_names": ["act1"]}
    if key == "hfc":
        pytest.importorskip("sklearn")
        return {"feature_model": GaussianFeatureModel.fit_model(model, x, y % 3, ["act2"], covariance_type="diag")}
    if key in ("wb", "wb_d", "spgd", "opgd", "apgd-joint"):
        return {"detector": detector}
    return {}


def test_registry_builds_every_paper_attack(trained, detector):
    model, x, y = trained
    assert set(ATTACK_NAMES) == {
        "FGSM", "BIM", "PGD", "MIM", "DIM", "TIM", "CW-Linf", "PGD-L2", "CW-L2", "TF", "Fea", "HFC", "WB", "WB_d",
        "SPGD", "OPGD", "APGD-CE", "APGD-CW", "APGD-Joint", "Square",
    }
    t = (y + 1) % 3
    for name in ATTACK_NAMES:
        attack = make_attack(name, model, **_extras(name, model, x, y, detector))
        assert isinstance(attack, Attack)
        if isinstance(attack, IterativeAttack):
            attack.steps = 2
        elif isinstance(attack, CarliniWagnerL2):
            attack.steps, attack.binary_search_steps = 3, 1
        elif isinstance(attack, SquareAttack):
            attack.queries = 5
        else:
            attack.source.steps = 2
        res = attack(x[:6], y[:6], t[:6])
        assert res.x_adv.shape == x[:6].shape and res.success.shape == (6,), name


def test_registry_defaults_and_names(trained):
    model, _, _ = trained
    for alias in ("pgd", "Pgd", "PGD"):
        assert type(make_attack(alias, model)) is PGD
    assert make_attack("apgd_ce", model).objective.__class__.__name__ == "CrossEntropy"
    assert make_attack("APGD-CW", model).objective.kappa is None
    assert make_attack("wb-d", model, detector=_Det()).schedule.at == 50
    pgd = make_attack("PGD", model)
    assert pgd.threat.eps == 16 / 256 and pgd.steps == 20 and pgd.step_size == pytest.approx(2 / 256)
    assert pgd.random_start and not make_attack("BIM", model).random_start
    assert make_attack("PGD-L2", model).threat.eps == 8 / 256
    assert make_attack("FGSM", model).steps == 1 and make_attack("FGSM", model).step_size == 16 / 256
    assert make_attack("PGD", model, eps=4 / 256, steps=7).steps == 7
    with pytest.raises(ValueError, match="Did you mean 'PGD'"):
        make_attack("PDG", model)
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("DeepFool", model)
    with pytest.raises(ValueError, match="source_model"):
        make_attack("TF", model)


class _Det(torch.nn.Module):
    layer_names = ("act2",)

    def forward(self, feats):
        return feats["act2"].mean((2, 3))[:, :3]


def test_bundle_config_instantiates_presets(trained):
    model, x, y = trained
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "network": "$None",
            "eps": 0.03125,
            "attack": {"_target_": "monai_aegis.attacks.PGD", "model": "@network", "eps": "@eps", "steps": 3},
            "named": {"_target_": "monai_aegis.attacks.make_attack", "name": "MIM", "model": "@network", "eps": "@eps"},
        }
    )
    parser["network"] = model
    attack = parser.get_parsed_content("attack")
    assert isinstance(attack, PGD) and attack.threat.eps == 0.03125 and attack.steps == 3
    named = parser.get_parsed_content("named")
    assert type(named).__name__ == "MIM" and named.threat.eps == 0.03125
    assert attack(x, y).x_adv.shape == x.shape


def test_transfer_attack_judges_on_the_target_model(trained):
    target_model, x, y = trained
    torch.manual_seed(1)
    xs, ys = make_data(240, seed=7)
    source_model = train(tiny_net(), xs, ys, steps=100)
    t = (y + 1) % 3
    torch.manual_seed(0)
    tf = TransferAttack(target_model, source_model, attack="PGD", steps=10)
    res = tf(x, y, t)
    src = res.info["source"]
    with torch.no_grad():
        assert torch.equal(src.success, source_model(src.x_adv).argmax(1) == t)
        assert torch.equal(res.success, target_model(res.x_adv).argmax(1) == t)
    assert torch.equal(res.x_adv, src.x_adv)
    assert src.success_rate >= res.success_rate  # transfer is weaker than white box
    # an Attack instance works too
    assert TransferAttack(target_model, attack=PGD(source_model, steps=1))(x, y).x_adv.shape == x.shape
    with pytest.raises(ValueError, match="cannot itself be 'TF'"):
        TransferAttack(target_model, source_model, attack="TF")
