import numpy as np
import pytest
import torch

from monai_aegis.metrics import detection_auroc, roc_curve, threshold_at_tnr, tpr_at_tnr

sk_metrics = pytest.importorskip("sklearn.metrics")


def _labels_scores(clean, adv):
    clean, adv = np.asarray(clean, dtype=float), np.asarray(adv, dtype=float)
    return np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv]


def _tied_scores(seed, n_clean=60, n_adv=45):
    rng = np.random.default_rng(seed)
    # integer-valued scores: many ties, within and across the two populations
    return rng.integers(0, 12, n_clean).astype(float), rng.integers(4, 16, n_adv).astype(float)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn(seed):
    clean, adv = _tied_scores(seed)
    y, s = _labels_scores(clean, adv)
    expected = sk_metrics.roc_auc_score(y, s)
    assert detection_auroc(clean, adv) == pytest.approx(expected, abs=1e-12)
    assert detection_auroc(torch.tensor(clean), torch.tensor(adv, dtype=torch.float32)) == pytest.approx(
        expected, abs=1e-12
    )
    # continuous scores too
    rng = np.random.default_rng(seed)
    c, a = rng.normal(size=200), rng.normal(0.7, size=150)
    y, s = _labels_scores(c, a)
    assert detection_auroc(c, a) == pytest.approx(sk_metrics.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("drop_intermediate", [True, False])
def test_roc_curve_matches_sklearn_exactly(drop_intermediate):
    clean, adv = _tied_scores(3)
    y, s = _labels_scores(clean, adv)
    fpr_ref, tpr_ref, thr_ref = sk_metrics.roc_curve(y, s, drop_intermediate=drop_intermediate)
    fpr, tpr, thr = roc_curve(clean, adv, drop_intermediate=drop_intermediate)
    assert isinstance(fpr, np.ndarray)  # numpy in -> numpy out
    np.testing.assert_array_equal(fpr, fpr_ref)
    np.testing.assert_array_equal(tpr, tpr_ref)
    np.testing.assert_array_equal(thr, thr_ref)
    fpr_t, tpr_t, thr_t = roc_curve(torch.tensor(clean), torch.tensor(adv), drop_intermediate=drop_intermediate)
    assert isinstance(fpr_t, torch.Tensor) and fpr_t.dtype == torch.float64
    np.testing.assert_array_equal(fpr_t.numpy(), fpr_ref)
    np.testing.assert_array_equal(thr_t.numpy(), thr_ref)


def test_auroc_extremes():
    assert detection_auroc([0.0, 1.0, 2.0], [3.0, 4.0]) == 1.0
    assert detection_auroc([3.0, 4.0], [0.0, 1.0, 2.0]) == 0.0
    assert detection_auroc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    # one tie between the populations counts one half: pairs (adv > clean) = 3 of 4, tie = 1 -> 3.5 / 4
    assert detection_auroc([0.0, 2.0], [2.0, 3.0]) == pytest.approx(0.875)


def test_tpr_at_90_tnr_hand_computed():
    clean = np.arange(10.0)  # 0..9
    adv = [8.0, 8.5, 9.0, 10.0, 3.0]
    # ceil(0.9 * 10) = 9 -> threshold = 9th smallest clean score = 8; flagged iff score > 8: 8.5, 9, 10
    assert threshold_at_tnr(clean, 0.9) == 8.0
    assert tpr_at_tnr(clean, adv, 0.9) == pytest.approx(3 / 5)
    # a score equal to the threshold is accepted as clean (strict '>'): 8.0 is not detected
    assert tpr_at_tnr(clean, [8.0], 0.9) == 0.0
    assert tpr_at_tnr(clean, adv, 1.0) == pytest.approx(1 / 5)  # only 10 > 9


def test_threshold_float_guard_and_ties():
    # 0.9 * 100 = 90.00000000000001 in floating point; the 90th smallest must be used, not the 91st
    assert threshold_at_tnr(torch.arange(100.0), 0.9) == 89.0
    # ties: k = ceil(0.5 * 5) = 3 -> threshold 1; every clean score tied with it is accepted (TNR 4/5 >= 0.5)
    clean = [2.0, 1.0, 1.0, 0.0, 1.0]
    t = threshold_at_tnr(clean, 0.5)
    assert t == 1.0
    assert np.mean(np.asarray(clean) <= t) == pytest.approx(0.8)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tnr", [0.5, 0.9, 0.95])
def test_tpr_at_tnr_is_best_roc_point(seed, tnr):
    clean, adv = _tied_scores(seed)
    fpr, tpr, _ = sk_metrics.roc_curve(*_labels_scores(clean, adv), drop_intermediate=False)
    expected = tpr[fpr <= 1 - tnr + 1e-12].max()
    assert tpr_at_tnr(clean, adv, tnr) == pytest.approx(expected, abs=1e-12)
    t = threshold_at_tnr(clean, tnr)
    assert np.mean(clean <= t) >= tnr


def test_inputs_and_errors():
    assert detection_auroc(np.array([[0.0], [1.0]]), [2.0]) == 1.0  # (N, 1) squeezed
    assert detection_auroc([0, 1], [2, 3]) == 1.0  # integer scores
    with pytest.raises(ValueError, match="clean_scores is empty"):
        detection_auroc([], [1.0])
    with pytest.raises(ValueError, match="adv_scores is empty"):
        tpr_at_tnr([1.0], torch.tensor([]))
    with pytest.raises(ValueError, match="NaN"):
        detection_auroc([0.0, float("nan")], [1.0])
    with pytest.raises(ValueError, match="Inf"):
        roc_curve([0.0], [float("inf")])
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        detection_auroc(np.zeros((3, 2)), [1.0])
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        threshold_at_tnr(torch.tensor(1.0))
    with pytest.raises(ValueError, match="real-valued"):
        detection_auroc(torch.tensor([True, False]), [1.0])
    with pytest.raises(ValueError, match=r"tnr must lie in \(0, 1\]"):
        threshold_at_tnr([1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match=r"tnr must lie in \(0, 1\]"):
        tpr_at_tnr([1.0, 2.0], [3.0], 1.5)
    with pytest.raises(TypeError):
        detection_auroc(object(), [1.0])


def test_tpr_key_names_the_tnr():
    from monai_aegis.metrics import tpr_key

    assert tpr_key(0.9) == "tpr@90tnr" and tpr_key(0.95) == "tpr@95tnr" and tpr_key(0.995) == "tpr@99.5tnr"
