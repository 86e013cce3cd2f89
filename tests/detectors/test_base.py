"""The common detector interface, checked for every detector: persistence, devices, dtypes and input errors."""

import pytest
import torch

from monai_aegis.detectors import (
    DETECTORS,
    DNNDetector,
    FeatureDetector,
    KernelDensityDetector,
    LIDDetector,
    MahalanobisDetector,
    load_detector,
)
from monai_aegis.networks import pool_features

pytest.importorskip("sklearn")

FACTORIES = {
    "kd": lambda: KernelDensityDetector(bandwidth=2.0),
    "lid": lambda: LIDDetector(k=10, batch_size=40),
    "maha": lambda: MahalanobisDetector(),
    "dnn": lambda: DNNDetector(epochs=2),
}


def _fitted(name, synthetic, dtype=torch.float32):
    feats, y = synthetic(80, dtype=dtype)
    adv, _ = synthetic(80, "between", seed=9, dtype=dtype)
    det = FACTORIES[name]()
    kwargs = {"adversarial": adv} if name in ("lid", "dnn") else {}
    return det.fit(feats, y, **kwargs)


@pytest.fixture(params=sorted(FACTORIES))
def name(request):
    return request.param


def test_registry():
    assert {k: v.__name__ for k, v in DETECTORS.items()} == {
        "kd": "KernelDensityDetector",
        "lid": "LIDDetector",
        "maha": "MahalanobisDetector",
        "dnn": "DNNDetector",
    }


def test_save_load_round_trip(name, synthetic, tmp_path):
    det = _fitted(name, synthetic)
    test, pred = synthetic(30, "between", seed=3)
    expected = det.score(test, pred)
    assert expected.shape == (30,) and expected.dtype == torch.float32
    path = tmp_path / f"{name}.pt"
    det.save(path)
    state = torch.load(path, weights_only=True)  # plain tensors and Python types only
    assert state["detector"] == name and state["layer_names"] == ["block", "head"]
    for loaded in (
        load_detector(path),
        type(det).load(path),
        FeatureDetector.load(path),
        load_detector(det.state_dict()),
    ):
        assert type(loaded) is type(det) and loaded.fitted
        assert loaded.get_config() == det.get_config()
        assert torch.equal(loaded.score(test, pred), expected)
    fresh = FACTORIES[name]()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.score(test, pred), expected)
    other = KernelDensityDetector if name != "kd" else MahalanobisDetector
    with pytest.raises(ValueError, match=f"holds a {type(det).__name__}"):
        other.load(path)
    with pytest.raises(ValueError, match=f"state dict is for detector '{name}'"):
        other().load_state_dict(state)


def test_dtype_and_device_follow_features(name, synthetic):
    det = _fitted(name, synthetic, dtype=torch.float64)
    test, pred = synthetic(20, "between", seed=3, dtype=torch.float64)
    s64 = det.score(test, pred)
    s32 = det.score({k: v.float() for k, v in test.items()}, pred)
    assert s64.dtype == torch.float64 and s32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), s64, rtol=1e-4, atol=1e-3)
    if torch.cuda.is_available():
        s_cuda = det.score({k: v.cuda() for k, v in test.items()}, pred.cuda())
        assert s_cuda.is_cuda
        torch.testing.assert_close(s_cuda.cpu(), s64, rtol=1e-8, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fit_on_gpu(name, synthetic):
    feats, y = synthetic(80)
    adv, _ = synthetic(80, "between", seed=9)
    kwargs = {"adversarial": {k: v.cuda() for k, v in adv.items()}} if name in ("lid", "dnn") else {}
    det = FACTORIES[name]().fit({k: v.cuda() for k, v in feats.items()}, y.cuda(), **kwargs)
    test, pred = synthetic(20, seed=3)
    assert det.score({k: v.cuda() for k, v in test.items()}, pred.cuda()).is_cuda
    assert torch.isfinite(load_detector(det.state_dict()).score(test, pred)).all()


def test_vector_detectors_pool_maps(synthetic):
    # KD / LID / MAHA average-pool maps: passing pooled features gives the same scores
    feats, y = synthetic(80, dtype=torch.float64)
    test, pred = synthetic(20, "between", seed=3, dtype=torch.float64)
    for det_cls in (KernelDensityDetector, MahalanobisDetector, LIDDetector):
        a = det_cls().fit(feats, y).score(test, pred)
        b = det_cls().fit(pool_features(feats), y).score(pool_features(test), pred)
        torch.testing.assert_close(a, b)
    flat = MahalanobisDetector(covariance="ledoit_wolf", reduction="flatten").fit(feats, y)
    assert flat.score(test).shape == (20,)
    with pytest.raises(ValueError, match=r"per-sample shape \(32,\) after reduction='flatten'.*\(128,\)"):
        flat.score({"block": test["block"][:, :, :2, :2], "head": test["head"]})


def test_input_errors(name, synthetic):
    feats, y = synthetic(80)
    test, pred = synthetic(10, seed=3)
    det = FACTORIES[name]()
    with pytest.raises(RuntimeError, match="not fitted"):
        det.score(test, pred)
    with pytest.raises(RuntimeError, match="not fitted"):
        det.state_dict()
    det = _fitted(name, synthetic)
    with pytest.raises(ValueError, match=r"unknown layer 'heads'.*Did you mean 'head'"):
        det.score({"block": test["block"], "heads": test["head"]}, pred)
    with pytest.raises(ValueError, match=r"missing layer\(s\) \['head'\]"):
        det.score({"block": test["block"]}, pred)
    with pytest.raises(
        ValueError, match=r"features\['head'\] has per-sample shape \(5,\)|features\['head'\] has channels"
    ):
        det.score({"block": test["block"], "head": test["head"][:, :5]}, pred)
    with pytest.raises(ValueError, match="same number of samples"):
        det.score({"block": test["block"], "head": test["head"][:7]}, pred)
    with pytest.raises(ValueError, match=r"features\['block'\] contains NaN"):
        det.score({"block": test["block"] * float("nan"), "head": test["head"]}, pred)
    with pytest.raises(ValueError, match="must have shape"):
        det.score({"block": test["block"], "head": test["head"][:, 0]}, pred)
    with pytest.raises(ValueError, match="floating point"):
        det.score({"block": test["block"], "head": test["head"].long()}, pred)
    with pytest.raises(ValueError, match="is empty"):
        det.score({}, pred)
    with pytest.raises(TypeError, match="mapping layer_name -> Tensor"):
        det.score(test["head"], pred)
    with pytest.raises(ValueError, match=r"pred_labels must have shape \(10,\)"):
        det.score(test, pred[:4])
    # fit: label count must match the features
    adv, _ = synthetic(80, "between", seed=9)
    kwargs = {"adversarial": adv} if name in ("lid", "dnn") else {}
    with pytest.raises(ValueError, match=r"labels must have shape \(80,\)"):
        FACTORIES[name]().fit(feats, y[:50], **kwargs)
    # a failed re-fit leaves the detector unfitted rather than half-updated
    with pytest.raises(ValueError):
        det.fit(feats, y[:50], **kwargs)
    assert not det.fitted
    with pytest.raises(ValueError, match="is empty"):
        FACTORIES[name]().fit({"head": torch.zeros(0, 8)}, torch.zeros(0, dtype=torch.long), **kwargs)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown detector type 'svm'"):
        load_detector({"detector": "svm"})
    with pytest.raises(ValueError, match="not a detector state dict"):
        load_detector({"weights": torch.zeros(1)})
