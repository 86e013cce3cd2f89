"""build_aegis: the Shield's inputs switch (hooked features / its own input branch / both) and persistence."""

import pytest
import torch

from monai_aegis.networks import INPUT_LAYER, AegisWrapper, build_aegis
from monai_aegis.networks.nets import small_vgg


@pytest.mark.parametrize("mode, layers", [
    ("features", ("block1", "block2", "block3", "block4")),
    ("input", (INPUT_LAYER,)),
    ("both", (INPUT_LAYER, "block1", "block2", "block3", "block4")),
])
def test_shield_inputs_switch_and_round_trip(mode, layers, tmp_path):
    torch.manual_seed(0)
    clf = small_vgg(1, 2, width=4)
    w = build_aegis(clf, (1, 32, 32), 2, cushion="jpeg80", shield_width=2, shield_hidden=4, shield_inputs=mode)
    assert w.layer_names == layers and w.shield.layer_names == layers
    w.set_threshold(torch.tensor([0.0, 0.1]))
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        out = w.screen(x)
    w.save(tmp_path / "aegis.pt")
    clf2 = small_vgg(1, 2, width=4)
    back = AegisWrapper.load(tmp_path / "aegis.pt", clf2)
    assert back.layer_names == layers
    with torch.no_grad():
        assert torch.equal(back.screen(x)["shield_logits"], out["shield_logits"])


def test_unknown_shield_inputs():
    with pytest.raises(ValueError, match="pixels"):
        build_aegis(small_vgg(1, 2, width=4), (1, 32, 32), 2, shield_inputs="pixels")


def test_recalibrate_site_sets_the_local_quantile_and_refuses_bad_input(tmp_path):
    from monai_aegis.bundle import recalibrate_site, site_datalist

    torch.manual_seed(0)
    w = build_aegis(small_vgg(1, 2, width=4), (1, 32, 32), 2, cushion=None, shield_width=2, shield_hidden=4)
    with pytest.raises(ValueError, match="calibrated Aegis"):
        recalibrate_site(w, torch.rand(40, 1, 32, 32), tmp_path / "site.pt")
    w.calibrate(torch.rand(40, 1, 32, 32), tnr=0.9, per_class=False)
    local = torch.rand(100, 1, 32, 32) * 0.5  # a darker site
    report = recalibrate_site(w, local, tmp_path / "site.pt", tmp_path / "site.json", tnr=0.9)
    scores, _ = w.shield_scores(local)
    assert report["accepted_after"] == pytest.approx(float((scores >= w.threshold).float().mean()))
    assert abs(report["accepted_after"] - 0.9) <= 0.02 and len(report["threshold_after"]) == 1
    assert (tmp_path / "site.pt").is_file() and (tmp_path / "site.json").is_file()
    with pytest.raises(ValueError, match="at least 20"):
        recalibrate_site(w, local[:5], tmp_path / "site2.pt")
    with pytest.raises(ValueError, match="calibration_dir"):
        site_datalist("")


def test_build_aegis_checks_classes_and_input_shape():
    clf = small_vgg(1, 2, width=4)
    with pytest.raises(ValueError, match=r"num_classes is 3, but the classifier outputs logits of shape \(1, 2\)"):
        build_aegis(clf, (1, 32, 32), 3, shield_width=2, shield_hidden=4)
    with pytest.raises(ValueError, match=r"cannot take images of input_shape \(3, 32, 32\)"):
        build_aegis(clf, (3, 32, 32), 2, shield_width=2, shield_hidden=4)
    w = build_aegis(clf, (1, 32, 32), 2, shield_width=2, shield_hidden=4)
    assert w.input_shape == (1, 32, 32)


def test_resnet50_preset_builds():
    tv = pytest.importorskip("torchvision")
    clf = tv.models.resnet50(weights=None, num_classes=2)
    wrapper = build_aegis(clf, (3, 64, 64), 2, layer_names=None, cushion="jpeg80", shield_width=4, shield_hidden=8)
    assert wrapper.layer_names == ("layer1.0", "layer2.0", "layer3.0", "layer4.0")  # blocks 1, 4, 8, 14
    wrapper.calibrate(torch.rand(8, 3, 64, 64), tnr=0.9, min_per_class=100)
    out = wrapper.screen(torch.rand(2, 3, 64, 64))
    assert out["logits"].shape == (2, 2) and out["accept"].shape == (2,)


def test_monai_densenet121_preset_builds():
    from monai.networks.nets import DenseNet121

    clf = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    wrapper = build_aegis(clf, (1, 64, 64), 2, layer_names=None, cushion="bit_depth4", shield_width=4, shield_hidden=8)
    assert wrapper.layer_names == ("features.transition1", "features.transition2", "features.transition3",
                                   "features.norm5")
    logits, feats = wrapper.forward_features(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 2) and list(feats) == list(wrapper.layer_names)


def test_vgg16_preset_from_config_entry():
    pytest.importorskip("torchvision")
    from monai.bundle import ConfigParser

    parser = ConfigParser({"net": {"_target_": "torchvision.models.vgg16", "num_classes": 2}})
    wrapper = build_aegis(parser.get_parsed_content("net"), (3, 64, 64), 2, "vgg16", cushion=None, shield_width=2,
                          shield_hidden=4)
    assert wrapper.layer_names == ("features.6", "features.13", "features.20", "features.27")


def test_unknown_layer_name_is_reported():
    with pytest.raises(ValueError, match="unknown layer name 'blok1'"):
        build_aegis(small_vgg(1, 2, width=4), (1, 32, 32), 2, layer_names=["blok1"])
