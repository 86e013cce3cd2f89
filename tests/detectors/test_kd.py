import numpy as np
import pytest
import torch

from monai_aegis.detectors import KernelDensityDetector, gaussian_kde_log_density
from monai_aegis.metrics import detection_auroc

neighbors = pytest.importorskip("sklearn.neighbors")


def _brute_force_log_density(x, ref, h):
    from scipy.special import logsumexp

    d2 = ((x[:, None, :] - ref[None]) ** 2).sum(-1)
    return logsumexp(-d2 / (2 * h * h), axis=1) - np.log(len(ref)) - ref.shape[1] / 2 * np.log(2 * np.pi * h * h)


def _kde(h):
    # ball_tree, not the default kd_tree: scikit-learn's kd_tree KDE returns densities off by up to hundreds of
    # nats when the kernel terms are small (here 0.39 nats at h=0.5 in 16-d; scikit-learn issues #7492, #27186).
    # The ball tree agrees with brute force to 1e-11 on these cases (asserted below).
    return neighbors.KernelDensity(kernel="gaussian", bandwidth=h, algorithm="ball_tree")


def test_log_density_matches_sklearn_float64():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(150, 16, generator=g, dtype=torch.float64) + 5
    x = torch.randn(40, 16, generator=g, dtype=torch.float64) + 5
    for h in (0.5, 2.0):
        expected = _kde(h).fit(ref.numpy()).score_samples(x.numpy())
        np.testing.assert_allclose(expected, _brute_force_log_density(x.numpy(), ref.numpy(), h), rtol=1e-11)
        ours = gaussian_kde_log_density(x, ref, h, chunk_size=16)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-10, atol=1e-8)
    ours32 = gaussian_kde_log_density(x.float(), ref.float(), 2.0)
    np.testing.assert_allclose(ours32.double().numpy(), expected, rtol=1e-5)


def test_log_density_exact_for_tiny_densities():
    # many dimensions, small bandwidth: every kernel term is tiny (the regime of KD on deep features), where
    # scikit-learn's trees (both kinds) return values hundreds of nats too high for some queries. The dense
    # logsumexp computation matches brute force.
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(150, 64, generator=g, dtype=torch.float64) * 2 + 5
    x = torch.randn(40, 64, generator=g, dtype=torch.float64) * 2 + 5
    for h in (0.7, 3.0):
        expected = _brute_force_log_density(x.numpy(), ref.numpy(), h)
        assert expected.min() < -150  # the hard regime
        ours = gaussian_kde_log_density(x, ref, h, chunk_size=16)
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_detector_scores_are_negative_sklearn_class_density(synthetic):
    feats, y = synthetic(120, dtype=torch.float64)
    test, pred = synthetic(50, "between", seed=1, dtype=torch.float64)
    det = KernelDensityDetector(bandwidth={"block": 0.9, "head": 1.7}).fit(feats, y)
    per_layer = det.score_layers(test, pred)
    for layer, h in (("block", 0.9), ("head", 1.7)):
        x_train = feats[layer].mean((2, 3)) if feats[layer].ndim == 4 else feats[layer]
        x_test = test[layer].mean((2, 3)) if test[layer].ndim == 4 else test[layer]
        expected = np.empty(50)
        for c in (0, 1):
            kde = _kde(h).fit(x_train[y == c].numpy())
            m = (pred == c).numpy()
            expected[m] = -kde.score_samples(x_test[m].numpy())
        np.testing.assert_allclose(per_layer[layer].numpy(), expected, rtol=1e-10)
    # the combined score is the mean over layers
    torch.testing.assert_close(det.score(test, pred), (per_layer["block"] + per_layer["head"]) / 2)


def test_median_bandwidth_heuristic(synthetic):
    feats, y = synthetic(80, dtype=torch.float64)
    det = KernelDensityDetector(bandwidth="median").fit(feats, y)
    x = feats["head"].numpy()
    nn_d = []
    for c in (0, 1):
        xc = x[y.numpy() == c]
        nn_d.append(neighbors.NearestNeighbors(n_neighbors=2).fit(xc).kneighbors(xc)[0][:, 1])
    assert det.bandwidths["head"] == pytest.approx(float(np.median(np.concatenate(nn_d))), rel=1e-9)
    assert det.bandwidths["block"] != det.bandwidths["head"]


def test_separates_off_manifold_and_label_flips(synthetic):
    feats, y = synthetic(300)
    det = KernelDensityDetector(bandwidth="median").fit(feats, y)
    clean, pred_clean = synthetic(200, seed=1)
    clean_scores = det.score(clean, pred_clean)
    for kind in ("between", "flip"):
        adv, pred_adv = synthetic(200, kind, seed=2)
        assert detection_auroc(clean_scores, det.score(adv, pred_adv)) > 0.95, kind
    same, pred_same = synthetic(200, seed=3)
    assert abs(detection_auroc(clean_scores, det.score(same, pred_same)) - 0.5) < 0.1


def test_chunking_and_dtype(synthetic):
    feats, y = synthetic(60, dtype=torch.float64)
    test, pred = synthetic(33, "between", seed=1, dtype=torch.float64)
    a = KernelDensityDetector(chunk_size=1024).fit(feats, y).score(test, pred)
    det = KernelDensityDetector(chunk_size=5).fit(feats, y)
    torch.testing.assert_close(det.score(test, pred), a, rtol=1e-12, atol=1e-10)
    s32 = det.score({k: v.float() for k, v in test.items()}, pred)
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), a, rtol=1e-5, atol=1e-3)


def test_errors(synthetic):
    feats, y = synthetic(40)
    with pytest.raises(ValueError, match="needs the class labels"):
        KernelDensityDetector().fit(feats, None)
    with pytest.raises(ValueError, match="bandwidth"):
        KernelDensityDetector(bandwidth=0.0)
    with pytest.raises(ValueError, match="bandwidth"):
        KernelDensityDetector(bandwidth="scott")
    with pytest.raises(ValueError, match=r"missing \['head'\]"):
        KernelDensityDetector(bandwidth={"block": 1.0}).fit(feats, y)
    det = KernelDensityDetector().fit(feats, y, num_classes=3)  # class 2 has no training sample
    with pytest.raises(ValueError, match="needs pred_labels"):
        det.score(feats)
    with pytest.raises(ValueError, match=r"classes \[2\] that had no training samples"):
        det.score(feats, torch.full((40,), 2))
    with pytest.raises(ValueError, match=r"pred_labels values must lie in \[0, 2\]"):
        det.score(feats, torch.full((40,), 3))
