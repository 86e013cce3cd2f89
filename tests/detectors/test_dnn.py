import pytest
import torch

from monai_aegis.detectors import DNNDetector, build_detector_head
from monai_aegis.metrics import detection_auroc


@pytest.mark.parametrize(
    "shape, first_layer",
    [
        ((12,), torch.nn.Linear),
        ((4, 9), torch.nn.Conv1d),
        ((4, 6, 6), torch.nn.Conv2d),
        ((3, 4, 5, 5), torch.nn.Conv3d),
    ],
)
def test_heads_sized_from_shapes(shape, first_layer):
    head = build_detector_head(shape)
    assert isinstance(head[1], first_layer)
    assert head(torch.randn(5, *shape)).shape == (5, 1)
    assert head(torch.randn(1, *shape)).shape == (1, 1)
    first = build_detector_head(shape, hidden=7)[1]
    assert (first.out_features if len(shape) == 1 else first.out_channels) == 7
    with pytest.raises(ValueError, match="1-3 spatial dims"):
        build_detector_head((2, 3, 3, 3, 3))


def _fit(synthetic, kind="between", seed=0, epochs=30, reduction="none"):
    feats, y = synthetic(256)
    adv, _ = synthetic(256, kind, seed=5)
    return DNNDetector(epochs=epochs, batch_size=64, lr=3e-3, seed=seed, reduction=reduction).fit(
        feats, y, adversarial=adv
    )


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_separates_held_out(synthetic, reduction):
    det = _fit(synthetic, reduction=reduction)
    clean, _ = synthetic(200, seed=1)
    adv, _ = synthetic(200, "between", seed=2)
    assert detection_auroc(det.score(clean), det.score(adv)) > 0.95
    per_layer = det.score_layers(adv)
    torch.testing.assert_close(det.score(adv), per_layer["block"] + per_layer["head"])  # logits summed


def test_chance_when_adversarial_is_clean(synthetic):
    det = _fit(synthetic, kind="clean")
    clean, _ = synthetic(300, seed=1)
    other, _ = synthetic(300, seed=2)
    assert abs(detection_auroc(det.score(clean), det.score(other)) - 0.5) < 0.1


def test_seeded_and_leaves_global_rng_alone(synthetic):
    state = torch.get_rng_state()
    a = _fit(synthetic, epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    b = _fit(synthetic, epochs=2)
    c = _fit(synthetic, epochs=2, seed=1)
    test, _ = synthetic(20, seed=3)
    assert torch.equal(a.score(test), b.score(test))
    assert not torch.allclose(a.score(test), c.score(test))


def test_errors(synthetic):
    feats, y = synthetic(30)
    adv, _ = synthetic(30, "between", seed=1)
    with pytest.raises(ValueError, match="needs adversarial features"):
        DNNDetector().fit(feats)
    with pytest.raises(ValueError, match="channels/spatial rank"):
        DNNDetector().fit(feats, adversarial={"block": adv["block"][:, :4], "head": adv["head"]})
    with pytest.raises(ValueError, match="1-3 spatial dims|shape"):
        DNNDetector().fit({"x": torch.randn(4, 2, 2, 2, 2, 2)}, adversarial={"x": torch.randn(4, 2, 2, 2, 2, 2)})
    det = DNNDetector(epochs=1).fit(feats, adversarial=adv)
    # conv heads accept another spatial size (global pooling) but not another channel count
    det.score({"block": torch.randn(3, 8, 6, 6), "head": torch.randn(3, 8)})
    with pytest.raises(ValueError, match=r"features\['block'\] has channels/spatial rank \(7, 4, 4\)"):
        det.score({"block": torch.randn(3, 7, 4, 4), "head": torch.randn(3, 8)})
