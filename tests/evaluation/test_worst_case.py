"""The worst-case adaptive evaluation: ensemble semantics, proxies, gradient-free and convergence checks, the curve."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_aegis.attacks import make_aegis_attack
from monai_aegis.evaluation import WORST_CASE_SCHEMA, validate
from monai_aegis.evaluation.worst_case import WorstCaseConfig, _proxy_cushions, worst_case_evaluation
from monai_aegis.networks import AegisWrapper, FeatureHooks, pool_features

# small budgets: every test runs in seconds on 2 CPU cores
FAST = {"steps": 10, "pgd_steps": 10, "lams": [1.0], "proxies": ["identity"], "blackbox_eps": [],
        "convergence_samples": 0, "undefended": False}


@pytest.fixture(scope="module")
def images(sample32):
    x, y = sample32["test"]
    idx = torch.cat([torch.arange(0, 8), torch.arange(len(y) - 8, len(y))])  # both classes
    return x[idx], y[idx], sample32["val"][0]


def _broken(wrapper, x_adv, y):
    with torch.no_grad():
        out = wrapper.screen(x_adv)
    return (out["pred"] != y) & out["accept"]


def test_config_checks_and_round_trip():
    cfg = WorstCaseConfig.from_dict({"eps": [8 / 256, 2 / 256], "steps": 7})
    assert cfg.eps == [2 / 256, 8 / 256] and WorstCaseConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Did you mean 'steps'"):
        WorstCaseConfig.from_dict({"stesp": 3})
    with pytest.raises(ValueError, match="proxies"):
        WorstCaseConfig(proxies=["bpda"])
    with pytest.raises(ValueError, match="convergence_eps"):
        WorstCaseConfig(eps=[4 / 256], convergence_eps=8 / 256)
    with pytest.raises(ValueError, match="blackbox_eps"):
        WorstCaseConfig(eps=[4 / 256], blackbox_eps=[16 / 256])
    assert WorstCaseConfig().resolved_blackbox_eps() == [4 / 256, 8 / 256, 16 / 256]


@pytest.mark.parametrize("name", ["APGD-Joint", "WB", "WB_d", "SPGD", "OPGD"])
def test_each_member_beats_random_noise_of_the_same_norm(tiny_wrapper, images, name):
    x, y, _ = images
    eps = 8 / 256
    torch.manual_seed(0)
    noise = (x + eps * torch.randint(0, 2, x.shape).float().mul(2).sub(1)).clamp(0, 1)
    attack = make_aegis_attack(name, tiny_wrapper, eps=eps, steps=20, keep_best=True,
                               **({"decay_at": 10} if name == "WB_d" else {}))
    res = attack(x, y, target=1 - y)
    assert float((res.x_adv - x).abs().max()) <= eps
    assert int(_broken(tiny_wrapper, res.x_adv, y).sum()) > int(_broken(tiny_wrapper, noise, y).sum()), name


def test_record_matches_schema_and_worst_case_is_no_better_than_any_member(tiny_wrapper, images):
    x, y, x_val = images
    # deterministic members (no random start), so each image's trajectory does not depend on its batch
    members = [{"name": "WB", "random_start": False}, {"name": "APGD-Joint", "random_start": False}]
    kw = {**FAST, "eps": [2 / 256, 8 / 256]}
    rec = worst_case_evaluation(tiny_wrapper, x, y, x_val, attacks=members, **kw)
    assert validate(rec, WORST_CASE_SCHEMA["properties"]["splits"]["additionalProperties"]) == []
    assert [r["eps"] for r in rec["curve"]] == [2 / 256, 8 / 256]
    assert set(rec["thresholds"]) == {"deployed", "5", "10"}
    for spec in members:
        alone = worst_case_evaluation(tiny_wrapper, x, y, x_val, attacks=[spec], **kw)
        for both, one in zip(rec["curve"], alone["curve"]):
            assert both["robust_accuracy"] <= one["robust_accuracy"] + 1 / len(y) + 1e-9, spec
            for q in one["sr"]:
                assert both["sr"][q] >= one["sr"][q] - 1 / len(y) - 1e-9
    # the wrapper was calibrated at 90 % TNR on these validation images: SR@10 is the deployed success rate, and the
    # looser 5 % rejection threshold can only let more through
    for r in rec["curve"]:
        assert r["sr"]["10"] == pytest.approx(r["success_rate"])
        assert r["sr"]["5"] >= r["sr"]["10"]
    assert {m["attack"] for m in rec["members"]} == {"WB", "APGD-Joint(lam=1)"}
    assert all(m["n_new"] <= m["n_broken"] <= m["n_run"] for m in rec["members"])


def test_curve_is_monotone_in_eps_without_carry_over(tiny_wrapper, images):
    x, y, x_val = images
    rec = worst_case_evaluation(tiny_wrapper, x, y, x_val, attacks=["APGD-Joint", "WB"], carry_over=False,
                                **{**FAST, "eps": [1 / 256, 4 / 256, 16 / 256]})
    ra = [r["robust_accuracy"] for r in rec["curve"]]
    assert all(b <= a + 1 / len(y) + 1e-9 for a, b in zip(ra, ra[1:])), ra
    assert ra[-1] < ra[0]  # the budget matters on this small model


def test_undefended_model_robust_accuracy_is_accuracy_under_the_strongest_attack(tiny_classifier, images):
    x, y, _ = images
    bare = AegisWrapper(tiny_classifier)
    kw = {**FAST, "eps": [4 / 256], "undefended": True, "undefended_attacks": ["APGD-CE", "APGD-CW"]}
    rec = worst_case_evaluation(bare, x, y, None, **kw)
    row = rec["curve"][0]
    assert rec["thresholds"] == {"deployed": None} and row["sr"] == {}
    assert row["robust_accuracy"] == pytest.approx(row["undefended_robust_accuracy"])  # the same system
    for name in ("APGD-CE", "APGD-CW"):
        one = worst_case_evaluation(bare, x, y, None, **{**kw, "undefended_attacks": [name], "undefended": False})
        assert row["robust_accuracy"] <= one["curve"][0]["robust_accuracy"] + 1e-9
    assert row["robust_accuracy"] <= row["clean_accuracy"]


def test_smooth_proxy_changes_the_gradient_not_the_value(tiny_wrapper, images):
    pytest.importorskip("kornia")
    x = images[0][:4].clone()
    notes: list[str] = []
    cushions = _proxy_cushions(tiny_wrapper.cushion, ["identity", "smooth"], notes)
    assert list(cushions) == ["identity", "smooth"] and not notes
    grads = {}
    w = torch.linspace(-1, 1, x[0].numel()).reshape(x[0].shape)
    for name, c in cushions.items():
        xg = x.clone().requires_grad_(True)
        out = c(xg)
        assert torch.equal(out.detach(), tiny_wrapper.cushion(x))  # the value is the true JPEG in both
        grads[name] = torch.autograd.grad((out * w).sum(), xg)[0]
    assert torch.allclose(grads["identity"], w.expand_as(x))  # identity BPDA: the upstream gradient itself
    assert not torch.allclose(grads["smooth"], grads["identity"], atol=1e-3)


class _ZeroGrad(torch.autograd.Function):
    """Forward unchanged, backward zero: a deliberately gradient-masked score."""

    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class MaskedDistanceShield(nn.Module):
    """A per-class feature-distance detector whose score carries no gradient (gradient masking by design)."""

    def __init__(self, layer_names, means, radius):
        super().__init__()
        self.layer_names = tuple(layer_names)
        self.num_classes = means[self.layer_names[0]].shape[0]
        self.means = {n: m for n, m in means.items()}
        self.radius = radius

    def forward(self, features):
        pooled = pool_features(features)
        d = sum((pooled[n][:, None] - self.means[n][None]).pow(2).mean(-1) for n in self.layer_names)
        return _ZeroGrad.apply(10.0 * (self.radius[None] - d))


def test_gradient_free_check_catches_a_masked_defence(tiny_classifier, sample32, images):
    x_tr, y_tr = sample32["train"]
    layers = ["block1"]  # shallow features: the classifier-only points the masked white box finds get rejected
    with torch.no_grad():
        _, feats = FeatureHooks(tiny_classifier, layers).run(x_tr)
    pooled = pool_features(feats)
    means = {n: torch.stack([f[y_tr == k].mean(0) for k in range(2)]) for n, f in pooled.items()}
    shield = MaskedDistanceShield(layers, means, torch.zeros(2))
    with torch.no_grad():
        d = -shield(feats) / 10.0
    shield.radius = torch.stack([d[y_tr == k, k].quantile(0.95) for k in range(2)])
    wrapper = AegisWrapper(tiny_classifier, shield)
    wrapper.calibrate(sample32["val"][0], tnr=0.9)
    x, y, x_val = images
    rec = worst_case_evaluation(wrapper, x, y, x_val, **{**FAST, "eps": [16 / 256], "blackbox_eps": [16 / 256],
                                                         "blackbox_queries": 300})
    bb = rec["blackbox"][0]
    assert bb["n_beats_whitebox"] > 0, bb
    check = next(c for c in rec["checks"] if c["name"].startswith("gradient-free"))
    assert check["passed"] is False and "masked" in check["detail"]
    row = rec["curve"][0]
    assert row["robust_accuracy"] < row["whitebox_robust_accuracy"]  # the worst case counts Square's finds
    assert row["broken_by_blackbox_only"] == bb["n_beats_whitebox"]


def test_convergence_check_reports_the_change(tiny_wrapper, images):
    x, y, x_val = images
    rec = worst_case_evaluation(tiny_wrapper, x, y, x_val, **{**FAST, "eps": [4 / 256, 8 / 256], "steps": 3,
                                                              "pgd_steps": 3, "convergence_samples": 8})
    (c,) = rec["convergence"]
    assert c["eps"] in (4 / 256, 8 / 256) and c["n"] == 8 and c["steps"] == 6 and c["restarts"] == 2
    assert c["strong_robust_accuracy"] <= c["base_robust_accuracy"]
    assert c["change"] == pytest.approx(c["base_robust_accuracy"] - c["strong_robust_accuracy"])
    # the rerun's own member records say which attack found the images the base run missed
    assert {m["attack"] for m in c["members"]} == set(rec["attacks"])
    assert sum(m["n_new"] for m in c["members"]) == round(c["n"] * c["change"])
    assert all(m["eps"] == c["eps"] and m["n_run"] <= 8 * 2 for m in c["members"])
    assert any(ch["name"].startswith("converged") and ch["passed"] == c["passed"] for ch in rec["checks"])


class _NoisyCushion(nn.Module):
    """A random defence: adds fresh uniform noise on every forward pass (differentiable)."""

    def forward(self, x):
        return (x + 0.01 * (torch.rand_like(x) - 0.5)).clamp(0, 1)


def test_random_defence_is_detected_and_attacked_with_eot(tiny_wrapper, images):
    x, y, x_val = images
    noisy = AegisWrapper(tiny_wrapper.classifier, tiny_wrapper.shield, cushion=_NoisyCushion(),
                         threshold=tiny_wrapper.threshold)
    rec = worst_case_evaluation(noisy, x[:6], y[:6], x_val, **{**FAST, "eps": [8 / 256], "steps": 3, "pgd_steps": 3,
                                                               "eot_samples": 2, "judge_draws": 3})
    assert rec["random_defence"] is True and any("EOT" in n for n in rec["notes"])
    assert rec["proxies"] == ["own"]  # a module without get_config is attacked through its own backward
    det = worst_case_evaluation(tiny_wrapper, x[:6], y[:6], x_val, **{**FAST, "eps": [8 / 256], "steps": 2,
                                                                      "pgd_steps": 2})
    assert det["random_defence"] is False


def test_bad_input(tiny_wrapper, images):
    x, y, _ = images
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        worst_case_evaluation(tiny_wrapper, x * 3, y, **FAST)
    with pytest.raises(ValueError, match="matching"):
        worst_case_evaluation(tiny_wrapper, x, y[:3], **FAST)
    uncalibrated = AegisWrapper(tiny_wrapper.classifier, tiny_wrapper.shield, cushion=tiny_wrapper.cushion)
    with pytest.raises(ValueError, match="threshold"):
        worst_case_evaluation(uncalibrated, x, y, **FAST)
    with pytest.raises(TypeError, match="AegisWrapper"):
        worst_case_evaluation(tiny_wrapper.classifier, x, y, **FAST)
