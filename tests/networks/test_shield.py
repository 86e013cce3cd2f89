import pytest
import torch
from torch import nn

from monai_aegis.networks import FeatureHooks, Shield, feature_shapes


class TinyNet(nn.Module):
    def __init__(self, dims=2, in_ch=1, classes=3):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.stem = nn.Sequential(conv(in_ch, 8, 3, padding=1), nn.ReLU())
        self.deep = nn.Sequential(conv(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.deep(self.stem(x)).flatten(2).mean(-1))


@pytest.mark.parametrize("dims, shape", [(2, (1, 16, 16)), (3, (1, 8, 8, 8))])
def test_shapes_2d_3d(dims, shape):
    net = TinyNet(dims)
    shield = Shield.from_classifier(net, ["stem", "deep", "fc"], shape, num_classes=3, width=4, hidden=8)
    assert shield.feature_shapes["stem"] == (8,) + shape[1:]
    assert shield.feature_shapes["fc"] == (3,)
    _, feats = FeatureHooks(net, shield.layer_names).run(torch.rand(5, *shape))
    out = shield(feats)
    assert out.shape == (5, 3)
    out1 = shield({k: v[:1] for k, v in feats.items()})
    assert torch.allclose(out1, out[:1], atol=1e-5)  # per-sample, no batch coupling


def test_detectors_are_separate_per_class():
    """Changing class 0's parameters must not change the logits of class 1 (Y separate detectors)."""
    net = TinyNet()
    shield = Shield.from_classifier(net, ["stem", "deep"], (1, 16, 16), num_classes=2, width=4, hidden=8)
    _, feats = FeatureHooks(net, shield.layer_names).run(torch.rand(4, 1, 16, 16))
    before = shield(feats).detach()
    loss = shield(feats)[:, 0].sum()
    loss.backward()
    # gradient of S_0 reaches no parameter slice of S_1: check fusion weights and grouped conv weights
    for w in shield.fusion_weights:
        assert w.grad[1].abs().sum() == 0 and w.grad[0].abs().sum() > 0
    conv = shield.branches[0].body[2]  # grouped 3x3 conv, output channels [0:4] for class 0
    assert conv.weight.grad[4:].abs().sum() == 0
    with torch.no_grad():
        for w in shield.fusion_weights:
            w[0].add_(1.0)
    after = shield(feats)
    assert torch.equal(after[:, 1], before[:, 1]) and not torch.equal(after[:, 0], before[:, 0])


def test_config_roundtrip_and_input_stats():
    net = TinyNet()
    shield = Shield.from_classifier(net, ["stem", "deep"], (1, 16, 16), num_classes=3, width=4, branch_depth=2,
                                    hidden=8, fusion_depth=2)
    _, feats = FeatureHooks(net, shield.layer_names, detach=True).run(torch.rand(6, 1, 16, 16))
    shield.fit_input_stats(feats)
    assert torch.allclose(shield.branches[0].mean, feats["stem"].mean((0, 2, 3)))
    clone = Shield.from_config(shield.get_config())
    clone.load_state_dict(shield.state_dict())
    assert torch.equal(clone(feats), shield(feats))


def test_errors():
    net = TinyNet()
    shield = Shield.from_classifier(net, ["stem", "deep"], (1, 16, 16), num_classes=3)
    _, feats = FeatureHooks(net, ["stem", "deep"]).run(torch.rand(2, 1, 16, 16))
    with pytest.raises(KeyError, match="'deep'"):
        shield({"stem": feats["stem"]})
    with pytest.raises(ValueError, match="'stem'.*shape"):
        shield({"stem": feats["stem"][:, :4], "deep": feats["deep"]})
    with pytest.raises(ValueError, match="num_classes"):
        Shield({"a": (4, 8, 8)}, 0)
    with pytest.raises(ValueError, match="at least one"):
        Shield({}, 2)
    with pytest.raises(ValueError, match="unknown layer name"):
        feature_shapes(net, ["stemm"], (1, 16, 16))


def test_select():
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert Shield.select(logits, torch.tensor([1, 0])).tolist() == [2.0, 3.0]


def test_input_branch_reads_the_image_itself():
    from monai_aegis.networks import INPUT_LAYER

    net = TinyNet()
    cushion = nn.Identity()
    shield = Shield.from_classifier(net, [INPUT_LAYER, "deep"], (1, 16, 16), num_classes=2, width=4, hidden=8,
                                    preprocess=cushion, input_depth=3)
    assert shield.feature_shapes[INPUT_LAYER] == (1, 16, 16) and shield.get_config()["input_depth"] == 3
    assert len([m for m in shield.branches[0].body if isinstance(m, nn.Conv2d)]) == 1 + 3
    x = torch.rand(3, 1, 16, 16)
    _, feats = FeatureHooks(net, shield.layer_names).run(x)
    assert torch.equal(feats[INPUT_LAYER], x)  # the hook captures the classifier's input
    # the output depends on the image through the input branch, not only through the hooked features
    img = feats[INPUT_LAYER].clone().requires_grad_(True)
    out = shield({INPUT_LAYER: img, "deep": feats["deep"].detach()})
    (g,) = torch.autograd.grad(out.sum(), img)
    assert g.abs().sum() > 0
    changed = shield({INPUT_LAYER: torch.rand_like(x), "deep": feats["deep"]})
    assert not torch.allclose(changed, out.detach())
    again = Shield.from_config(shield.get_config())
    again.load_state_dict(shield.state_dict())
    assert torch.equal(again(feats), shield(feats))


def test_input_stems_strided_and_pointwise():
    from monai_aegis.networks import INPUT_LAYER

    net = TinyNet()
    kw = {"num_classes": 2, "width": 4, "hidden": 8, "preprocess": nn.Identity(), "input_depth": 2}
    strided = Shield.from_classifier(net, [INPUT_LAYER], (1, 16, 16), **kw)  # the default stem
    pointwise = Shield.from_classifier(net, [INPUT_LAYER], (1, 16, 16), input_stem="pointwise", **kw)
    first = [m for m in strided.branches[0].body if isinstance(m, nn.Conv2d)][0]
    assert (first.kernel_size, first.stride, first.in_channels, first.out_channels) == ((3, 3), (2, 2), 1, 8)
    first = [m for m in pointwise.branches[0].body if isinstance(m, nn.Conv2d)][0]
    assert (first.kernel_size, first.stride) == ((1, 1), (1, 1))
    x = torch.rand(3, 1, 16, 16)
    # the strided stem halves the map before the grouped convolutions (pointwise: they start at full resolution)
    assert strided.branches[0].body[:2](x).shape[-1] == 8 and pointwise.branches[0].body[:2](x).shape[-1] == 16
    # each class's detector has stem weights of its own: class 1's score does not depend on class 0's channels
    out = strided({INPUT_LAYER: x})
    (g,) = torch.autograd.grad(out[:, 1].sum(), strided.branches[0].body[0].weight)
    assert g[:4].abs().sum() == 0 and g[4:].abs().sum() > 0
    # a config saved before the option existed (no "input_stem") is the pointwise stem, and its weights load
    old = pointwise.get_config()
    del old["input_stem"]
    again = Shield.from_config(old)
    again.load_state_dict(pointwise.state_dict())
    assert torch.equal(again({INPUT_LAYER: x}), pointwise({INPUT_LAYER: x}))
    with pytest.raises(ValueError, match="input_stem"):
        Shield.from_classifier(net, [INPUT_LAYER], (1, 16, 16), input_stem="patch", **kw)
