import numpy as np
import pytest
import torch

from monai_aegis.detectors import (
    MahalanobisDetector,
    class_conditional_gaussian,
    ledoit_wolf_covariance,
    whitening_matrix,
)
from monai_aegis.metrics import detection_auroc

covariance = pytest.importorskip("sklearn.covariance")


def _data(n=300, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    means = 3 * torch.randn(3, d, generator=g, dtype=torch.float64)
    return means[y] + torch.randn(n, d, generator=g, dtype=torch.float64) @ mix, y


def test_tied_covariance_matches_sklearn():
    x, y = _data()
    means, cov = class_conditional_gaussian(x, y, 3)
    for c in range(3):
        torch.testing.assert_close(means[c], x[y == c].mean(0))
    xc = (x - means[y]).numpy()
    np.testing.assert_allclose(
        cov.numpy(), covariance.EmpiricalCovariance().fit(xc).covariance_, rtol=1e-12, atol=1e-12
    )
    _, cov_lw = class_conditional_gaussian(x, y, 3, covariance="ledoit_wolf")
    lw = covariance.LedoitWolf().fit(xc)
    np.testing.assert_allclose(cov_lw.numpy(), lw.covariance_, rtol=1e-12, atol=1e-12)
    assert ledoit_wolf_covariance(torch.as_tensor(xc))[1] == pytest.approx(lw.shrinkage_, rel=1e-10)


@pytest.mark.parametrize("cov_kind", ["empirical", "ledoit_wolf"])
def test_scores_match_sklearn_mahalanobis(cov_kind):
    x, y = _data()
    test, _ = _data(60, seed=1)
    pred = torch.randint(0, 3, (60,))
    est_cls = covariance.EmpiricalCovariance if cov_kind == "empirical" else covariance.LedoitWolf
    means, _ = class_conditional_gaussian(x, y, 3)
    est = est_cls().fit((x - means[y]).numpy())
    # sklearn measures from est.location_; shift the queries so that the reference point is each class mean
    d2 = np.stack([est.mahalanobis(test.numpy() - means[c].numpy() + est.location_) for c in range(3)], 1)
    det = MahalanobisDetector(covariance=cov_kind).fit({"f": x}, y)
    np.testing.assert_allclose(det.score({"f": test}).numpy(), d2.min(1), rtol=1e-9)
    det_pred = MahalanobisDetector(covariance=cov_kind, class_assignment="predicted").fit({"f": x}, y)
    np.testing.assert_allclose(det_pred.score({"f": test}, pred).numpy(), d2[np.arange(60), pred.numpy()], rtol=1e-9)


def test_singular_covariance_uses_pseudo_inverse():
    # more channels than samples: the covariance is singular; scores stay finite and equal sklearn's pinvh ones
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 20, generator=g, dtype=torch.float64)
    y = torch.arange(12) % 2
    det = MahalanobisDetector().fit({"f": x}, y)
    means, cov = class_conditional_gaussian(x, y, 2)
    w = whitening_matrix(cov)
    assert w.shape[1] == 10  # rank = 12 samples - 2 class means
    est = covariance.EmpiricalCovariance().fit((x - means[y]).numpy())
    q = torch.randn(7, 20, generator=g, dtype=torch.float64)
    d2 = np.stack([est.mahalanobis(q.numpy() - means[c].numpy() + est.location_) for c in range(2)], 1)
    np.testing.assert_allclose(det.score({"f": q}).numpy(), d2.min(1), rtol=1e-6)


def test_separates_off_manifold_and_assignment_modes(synthetic):
    feats, y = synthetic(300)
    clean, pred_clean = synthetic(200, seed=1)
    between, pred_between = synthetic(200, "between", seed=2)
    flip, pred_flip = synthetic(200, "flip", seed=3)
    same, pred_same = synthetic(200, seed=4)
    det = MahalanobisDetector().fit(feats, y)
    clean_scores = det.score(clean)
    assert detection_auroc(clean_scores, det.score(between)) > 0.95
    assert abs(detection_auroc(clean_scores, det.score(same)) - 0.5) < 0.1
    # min over classes cannot see a wrong prediction (a flipped sample sits on another class's Gaussian) ...
    assert abs(detection_auroc(clean_scores, det.score(flip)) - 0.5) < 0.1
    # ... the distance to the predicted class can
    det_pred = MahalanobisDetector(class_assignment="predicted").fit(feats, y)
    assert detection_auroc(det_pred.score(clean, pred_clean), det_pred.score(flip, pred_flip)) > 0.95
    with pytest.raises(ValueError, match="needs pred_labels"):
        det_pred.score(clean)


def test_errors(synthetic):
    feats, y = synthetic(50)
    with pytest.raises(ValueError, match=r"classes \[2\] have no training samples"):
        MahalanobisDetector().fit(feats, y, num_classes=3)
    with pytest.raises(ValueError, match="did you mean"):
        MahalanobisDetector(covariance="ledoitwolf")
    with pytest.raises(ValueError):
        MahalanobisDetector(class_assignment="nearest")
