import pytest
import torch
from torch import nn

from monai_aegis.evaluation.classifiers import (
    SMALL_VGG_LAYERS,
    build_classifier,
    load_classifier,
    save_classifier,
    small_vgg,
)
from monai_aegis.networks import FeatureHooks


def test_small_vgg_shapes_and_hooks():
    net = small_vgg(3, 5, width=4, convs_per_block=2).eval()
    x = torch.rand(2, 3, 32, 32)
    logits, feats = FeatureHooks(net, SMALL_VGG_LAYERS).run(x)
    assert logits.shape == (2, 5)
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)]
    full = small_vgg(1, 2, width=4, stem_stride=1)
    assert FeatureHooks(full, "block1").run(torch.rand(1, 1, 32, 32))[1]["block1"].shape[-1] == 32
    with pytest.raises(ValueError, match="positive"):
        small_vgg(1, 2, width=0)


def test_build_classifier_names_and_import_paths():
    assert isinstance(build_classifier("small_vgg", 1, 2, width=4), nn.Sequential)
    rn = build_classifier("resnet18", in_channels=1, num_classes=3)
    assert rn.conv1.in_channels == 1 and rn.eval()(torch.rand(1, 1, 32, 32)).shape == (1, 3)
    net = build_classifier("monai_aegis.evaluation.classifiers:small_vgg", 1, 2, width=4)
    assert net.fc.out_features == 2
    with pytest.raises(ValueError, match="unknown classifier"):
        build_classifier("vgg99")
    with pytest.raises(ValueError, match="cannot import"):
        build_classifier("no_such_module:f")


def test_save_and_load_classifier(tmp_path):
    net = small_vgg(1, 2, width=4).eval()
    path = tmp_path / "clf.pt"
    save_classifier(net, path, "small_vgg", info={"acc": 0.9}, width=4)
    loaded, info = load_classifier(path)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    assert info["acc"] == 0.9 and info["arch"] == "small_vgg" and info["kwargs"] == {"width": 4}
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a classifier checkpoint"):
        load_classifier(tmp_path / "other.pt")
