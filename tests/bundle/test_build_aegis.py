"""build_aegis: the Shield's inputs switch (hooked features / its own input branch / both) and persistence."""

import pytest
import torch

from monai_aegis.bundle import build_aegis
from monai_aegis.networks import INPUT_LAYER, AegisWrapper
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
