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
