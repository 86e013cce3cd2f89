import math

import numpy as np
import pytest
import torch

from monai_aegis.detectors import LIDDetector, knn_distances, lid_mle, minibatch_lid
from monai_aegis.metrics import detection_auroc

neighbors = pytest.importorskip("sklearn.neighbors")


def _mle_numpy(d):  # Ma et al.'s formula: -k / sum(log(r_i / r_k))
    return -d.shape[1] / np.sum(np.log(d / d[:, -1:]), axis=1)


def test_lid_mle_hand_computed():
    # r = (1, 2, 4): mean log(r_i / r_k) = (log 1/4 + log 1/2 + 0) / 3 = -log 2 -> LID = 1 / log 2
    assert float(lid_mle(torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64))) == pytest.approx(1 / math.log(2))
    # degenerate inputs stay finite: duplicates (zero distance) -> ~0, all-equal distances -> large
    assert float(lid_mle(torch.tensor([0.0, 1.0, 2.0]))) < 0.1
    assert math.isfinite(float(lid_mle(torch.tensor([3.0, 3.0, 3.0]))))


def test_knn_distances_match_sklearn():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(90, 6, generator=g, dtype=torch.float64) + 10
    q = torch.randn(25, 6, generator=g, dtype=torch.float64) + 10
    nn = neighbors.NearestNeighbors(n_neighbors=7).fit(ref.numpy())
    np.testing.assert_allclose(knn_distances(q, ref, 7).numpy(), nn.kneighbors(q.numpy())[0], rtol=1e-10)
    # exclude_self: the query's own row is not its neighbour (sklearn returns it first, at distance 0)
    d_self = nn.kneighbors(ref.numpy(), n_neighbors=8)[0][:, 1:]
    np.testing.assert_allclose(knn_distances(ref, ref, 7, exclude_self=True).numpy(), d_self, rtol=1e-10)
    with pytest.raises(ValueError, match="k must lie in"):
        knn_distances(q, ref, 91)


def test_minibatch_lid_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(250, 5, generator=g, dtype=torch.float64)  # 2 minibatches of 100, remainder 50 dropped
    q = torch.randn(30, 5, generator=g, dtype=torch.float64) * 1.5
    k = 10
    expected = np.mean(
        [
            _mle_numpy(
                neighbors.NearestNeighbors(n_neighbors=k)
                .fit(ref[b * 100 : (b + 1) * 100].numpy())
                .kneighbors(q.numpy())[0]
            )
            for b in range(2)
        ],
        axis=0,
    )
    np.testing.assert_allclose(minibatch_lid(q, ref, k, 100, chunk_size=7).numpy(), expected, rtol=1e-10)
    # clean reference samples measured against their own minibatch exclude themselves
    own = ref[:100].numpy()
    d_own = neighbors.NearestNeighbors(n_neighbors=k + 1).fit(own).kneighbors(own)[0][:, 1:]
    d_other = neighbors.NearestNeighbors(n_neighbors=k).fit(ref[100:200].numpy()).kneighbors(own)[0]
    expected_self = (_mle_numpy(d_own) + _mle_numpy(d_other)) / 2
    ours = minibatch_lid(ref[:100], ref, k, 100, self_index=torch.arange(100))
    np.testing.assert_allclose(ours.numpy(), expected_self, rtol=1e-10)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 99\]"):
        minibatch_lid(ref[:5], ref, 100, 100, self_index=torch.arange(5))


def test_lid_is_intrinsic_dimension():
    # points on a 2-d plane embedded in 10-d vs points filling all 10 dims
    g = torch.Generator().manual_seed(2)
    plane = torch.zeros(400, 10, dtype=torch.float64)
    plane[:, :2] = torch.rand(400, 2, generator=g, dtype=torch.float64)
    full = torch.rand(400, 10, generator=g, dtype=torch.float64)
    lid_plane = minibatch_lid(plane[:50], plane[50:], 20, 100).mean()
    lid_full = minibatch_lid(full[:50], full[50:], 20, 100).mean()
    assert 1.5 < lid_plane < 3.0 and lid_full > 5.0


@pytest.mark.parametrize("aggregation", ["mean", "logistic"])
def test_supervised_separates(synthetic, aggregation):
    feats, y = synthetic(300)
    adv_train, _ = synthetic(300, "between", seed=5)
    noisy_train, _ = synthetic(300, seed=6)
    det = LIDDetector(k=20, aggregation=aggregation).fit(feats, y, adversarial=adv_train, noisy=noisy_train)
    assert det.supervised
    clean, _ = synthetic(200, seed=1)
    adv, _ = synthetic(200, "between", seed=2)
    same, _ = synthetic(200, seed=3)
    clean_scores = det.score(clean)
    assert detection_auroc(clean_scores, det.score(adv)) > 0.9
    assert abs(detection_auroc(clean_scores, det.score(same)) - 0.5) < 0.1
    # score_layers gives the raw per-layer LIDs; adversarial points between the classes have a higher LID
    lids_clean, lids_adv = det.score_layers(clean), det.score_layers(adv)
    assert list(lids_clean) == ["block", "head"]
    assert all(float(lids_adv[k].mean()) > float(lids_clean[k].mean()) for k in lids_clean)


def test_unsupervised_is_mean_lid_and_noisy_changes_regression(synthetic):
    feats, y = synthetic(300)
    det = LIDDetector(k=20).fit(feats)
    assert not det.supervised
    test, _ = synthetic(50, "between", seed=1)
    per_layer = det.score_layers(test)
    torch.testing.assert_close(det.score(test), (per_layer["block"] + per_layer["head"]) / 2)
    adv, _ = synthetic(300, "between", seed=5)
    noisy, _ = synthetic(300, "between", seed=7)  # "noise" as unusual as the attack: the regression must weaken
    sup = LIDDetector(k=20).fit(feats, adversarial=adv)
    sup_noisy = LIDDetector(k=20).fit(feats, adversarial=adv, noisy=noisy)
    assert not torch.allclose(sup.score(test), sup_noisy.score(test))


def test_errors(synthetic):
    feats, y = synthetic(40)
    adv, _ = synthetic(40, "between", seed=1)
    with pytest.raises(ValueError, match="aggregation='logistic' need"):
        LIDDetector(aggregation="logistic").fit(feats)
    with pytest.raises(ValueError, match="noisy features need"):
        LIDDetector().fit(feats, noisy=adv)
    with pytest.raises(ValueError, match="at least 3 clean samples"):
        LIDDetector().fit({k: v[:2] for k, v in feats.items()})
    with pytest.raises(ValueError, match="adversarial has unknown layer 'hed'.*Did you mean 'head'"):
        LIDDetector().fit(feats, adversarial={"block": adv["block"], "hed": adv["head"]})
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        LIDDetector(batch_size=1)
    # k larger than the minibatch is clipped to batch_size - 1 (as Ma et al.'s code)
    det = LIDDetector(k=50, batch_size=10).fit(feats)
    torch.testing.assert_close(det.score(adv), LIDDetector(k=9, batch_size=10).fit(feats).score(adv))
