import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toys import make_data
from torch import nn

from monai_aegis.attacks import (
    HFC,
    PGD,
    CrossEntropy,
    CWMargin,
    DetectorEvasion,
    DetectorGate,
    DetectorLogit,
    FeatureMatch,
    FeatureSpaceAttack,
    GaussianFeatureModel,
    WeightedSum,
    extract_pooled_features,
)
from monai_aegis.attacks.objectives import _orthogonal
from monai_aegis.networks import FeatureHooks

LOGITS = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
Y = torch.tensor([0, 1])
T = torch.tensor([2, 0])


def test_cross_entropy_convention():
    ce = CrossEntropy()
    assert torch.allclose(ce(LOGITS, {}, Y, None), F.cross_entropy(LOGITS, Y, reduction="none"))
    assert torch.allclose(ce(LOGITS, {}, Y, T), -F.cross_entropy(LOGITS, T, reduction="none"))


def test_cw_margin_convention_and_cap():
    # targeted: Z_t - max_{j != t} Z_j ; untargeted: max_{j != y} Z_j - Z_y
    assert torch.allclose(CWMargin(kappa=None)(LOGITS, {}, Y, T), torch.tensor([-3.0, -3.0]))
    assert torch.allclose(CWMargin(kappa=None)(LOGITS, {}, Y, None), torch.tensor([-1.0, -2.0]))
    up = torch.tensor([[0.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    assert torch.allclose(CWMargin(kappa=None)(up, {}, Y, T), torch.tensor([5.0, 4.0]))
    assert torch.allclose(CWMargin(kappa=1.5)(up, {}, Y, T), torch.tensor([1.5, 1.5]))
    with pytest.raises(ValueError, match="kappa"):
        CWMargin(kappa=-1)


def test_weighted_sums_compose():
    ce, cw = CrossEntropy(), CWMargin(kappa=None)
    obj = 2 * ce + cw - 0.5 * ce
    assert isinstance(obj, WeightedSum) and len(obj.terms) == 3
    expected = 1.5 * ce(LOGITS, {}, Y, T) + cw(LOGITS, {}, Y, T)
    assert torch.allclose(obj(LOGITS, {}, Y, T), expected)
    assert torch.allclose((-ce)(LOGITS, {}, Y, T), -ce(LOGITS, {}, Y, T))
    fm = FeatureMatch(["a", "b"], torch.rand(3, 1, 4, 4))
    assert (ce + fm + FeatureMatch(["b", "c"], torch.rand(3, 1, 4, 4))).layer_names == ("a", "b", "c")
    with pytest.raises(TypeError):
        ce + 1.0


class LinearDetector(nn.Module):
    """Stand-in detector: linear head on pooled features."""

    layer_names = ("act1", "act2")

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8 + 16, 3)

    def forward(self, feats):
        return self.head(torch.cat([f.mean((2, 3)) for f in feats.values()], 1))


def test_detector_logit_picks_target_or_prediction(trained):
    model, x, y = trained
    det = LinearDetector()
    obj = DetectorLogit(det)
    assert obj.layer_names == ("act1", "act2")
    logits, feats = FeatureHooks(model, obj.layer_names).run(x)
    scores = det(feats)
    t = (y + 1) % 3
    assert torch.allclose(obj(logits, feats, y, t), scores[torch.arange(len(y)), t])
    pred = logits.argmax(1)
    assert torch.allclose(obj(logits, feats, y, None), scores[torch.arange(len(y)), pred])
    gate = DetectorGate(det, threshold=torch.tensor([0.0, 10.0, -10.0]))
    acc = gate.accepted(logits, feats)
    assert torch.equal(acc, scores[torch.arange(len(y)), pred] >= torch.tensor([0.0, 10.0, -10.0])[pred])
    with pytest.raises(ValueError, match="layer_names"):
        DetectorLogit(nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"\(B, num_classes\)"):
        DetectorLogit(lambda f: torch.zeros(4), layer_names=["act1"])(logits, feats, y, t)


def test_orthogonal_projection_and_selection():
    g_c, g_d = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    p = _orthogonal(g_c, g_d)
    assert torch.allclose((p * g_d).flatten(1).sum(1), torch.zeros(4), atol=1e-5)
    gate = DetectorGate(LinearDetector(), 0.0)
    logits = torch.tensor([[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0]])
    y, t = torch.tensor([0, 0, 1, 0]), torch.tensor([1, 1, 2, 2])  # fooled: samples 0 and 2
    terms = (torch.zeros(4), torch.zeros(4))
    sel = DetectorEvasion(CrossEntropy(), gate, mode="selective").combine([g_c, g_d], terms, logits, y, t)
    assert torch.equal(sel[[0, 2]], g_d[[0, 2]]) and torch.equal(sel[[1, 3]], g_c[[1, 3]])
    orth = DetectorEvasion(CrossEntropy(), gate, mode="orthogonal").combine([g_c, g_d], terms, logits, y, t)
    assert torch.allclose(orth[[0, 2]], _orthogonal(g_d, g_c)[[0, 2]])
    assert torch.allclose(orth[[1, 3]], _orthogonal(g_c, g_d)[[1, 3]])
    # switch on the detector: classifier step while accepted (term >= 0), detector step while rejected
    by_det = DetectorEvasion(CrossEntropy(), gate, mode="selective", switch_on="detector")
    det_terms = (torch.zeros(4), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    out = by_det.combine([g_c, g_d], det_terms, logits, y, t)
    assert torch.equal(out[[0, 2]], g_c[[0, 2]]) and torch.equal(out[[1, 3]], g_d[[1, 3]])
    with pytest.raises(ValueError, match="mode"):
        DetectorEvasion(CrossEntropy(), gate, mode="both")


def _guides(num_classes=3):
    x, y = make_data(30, seed=4)
    return torch.stack([x[y == k][0] for k in range(num_classes)])


def test_feature_attack_lowers_feature_distance(trained):
    model, x, y = trained
    t = (y + 1) % 3
    guides = _guides()
    layers = ["act1", "act2"]
    res = FeatureSpaceAttack(model, guides, layers, steps=30)(x, y, t)

    def dist(z):
        with torch.no_grad():
            _, f = FeatureHooks(model, layers).run(z)
            _, g = FeatureHooks(model, layers).run(guides[t])
        return sum(((f[n] - g[n]).flatten(1).pow(2).sum(1) / g[n].flatten(1).pow(2).sum(1)) for n in layers) / 2

    before, after = dist(x), dist(res.x_adv)
    assert bool((after < before).all())
    assert float(after.mean()) < 0.8 * float(before.mean())
    assert torch.allclose(-after, res.objective, atol=1e-5)  # the reported objective is that distance
    with pytest.raises(ValueError, match="targeted"):
        FeatureSpaceAttack(model, guides, layers, steps=1)(x, y)
    with pytest.raises(ValueError, match="guides"):
        FeatureSpaceAttack(model, guides[:, :1], layers, steps=1)(x, y, t)


@pytest.mark.parametrize("cov", ["full", "diag", "tied", "spherical"])
def test_feature_model_matches_sklearn(cov):
    sklearn = pytest.importorskip("sklearn.mixture")
    g = torch.Generator().manual_seed(0)
    feats = {"a": torch.randn(60, 4, generator=g), "b": torch.randn(60, 3, generator=g) * 2 + 1}
    labels = torch.arange(60) % 2
    fm = GaussianFeatureModel.fit(feats, labels, n_components=2, covariance_type=cov, reg_covar=1e-3)
    q = {"a": torch.randn(5, 4, generator=g), "b": torch.randn(5, 3, generator=g)}
    for c in range(2):
        cls = torch.full((5,), c)
        expected = 0.0
        for n, f in feats.items():
            gm = sklearn.GaussianMixture(2, covariance_type=cov, reg_covar=1e-3, random_state=0)
            gm.fit(f[labels == c].double().numpy())
            expected = expected + gm.score_samples(q[n].double().numpy())
            # nearest-component squared Mahalanobis distance
            prec = np.linalg.inv(gm.covariances_) if cov == "full" else None
            if cov == "full":
                d = np.stack([((q[n].numpy() - m) @ p * (q[n].numpy() - m)).sum(1) for m, p in zip(gm.means_, prec)])
                assert np.allclose(fm.mahalanobis(q, cls)[n].numpy(), d.min(0), rtol=1e-4, atol=1e-4)
        assert np.allclose(fm.log_likelihood(q, cls).double().numpy(), expected, rtol=1e-4, atol=1e-3)
    # state_dict round trip
    fm2 = GaussianFeatureModel(["a", "b"], [4, 3], 2, 2, cov)
    fm2.load_state_dict(fm.state_dict())
    assert torch.equal(fm2.log_likelihood(q, torch.zeros(5, dtype=torch.long)),
                       fm.log_likelihood(q, torch.zeros(5, dtype=torch.long)))
    with pytest.raises(ValueError, match="n_components"):
        GaussianFeatureModel.fit(feats, labels, n_components=40)
    with pytest.raises(ValueError, match="lack layer"):
        fm.log_likelihood({"a": q["a"]}, torch.zeros(5, dtype=torch.long))


def test_hfc_raises_target_class_log_likelihood(trained):
    pytest.importorskip("sklearn")
    model, x, y = trained
    t = (y + 1) % 3
    xtr, ytr = make_data(240, seed=1)
    layers = ["act1", "act2"]
    fm = GaussianFeatureModel.fit_model(model, xtr, ytr, layers, n_components=2, reg_covar=1e-3)

    def ll(z):
        return fm.log_likelihood(extract_pooled_features(model, z, layers), t)

    torch.manual_seed(0)
    plain = PGD(model, steps=30)(x, y, t)
    torch.manual_seed(0)
    hfc = HFC(model, fm, lam=5.0, steps=30)(x, y, t)
    assert float(ll(hfc.x_adv).mean()) > float(ll(plain.x_adv).mean()) + 1.0
    assert float(ll(hfc.x_adv).mean()) > float(ll(x).mean())
    assert hfc.success_rate >= 0.5  # still a targeted attack
