import pytest
import torch
from torch import nn

from monai_aegis.networks import FeatureHooks, default_layer_names, pool_features, resolve_layer_names

torchvision = pytest.importorskip("torchvision")


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.block2(self.block1(x)).mean((2, 3)))


def test_captures_shapes_and_removes():
    net = SmallNet()
    x = torch.rand(3, 1, 16, 16)
    ref = net(x)
    with FeatureHooks(net, ["block1", "block2"]) as hooks:
        out = net(x)
        feats = hooks.collect()
        assert list(feats) == ["block1", "block2"]
        assert feats["block1"].shape == (3, 4, 16, 16)
        assert feats["block2"].shape == (3, 8, 8, 8)
        assert _hook_count(net) == 2
    assert _hook_count(net) == 0
    assert torch.equal(out, ref)
    torch.jit.script(net)  # left scriptable


def test_run_gradients_flow_and_leaves_no_hooks():
    net = SmallNet()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    out, feats = FeatureHooks(net, ["block2"]).run(x)
    feats["block2"].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert _hook_count(net) == 0


def test_detach_and_transform():
    net = SmallNet()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    _, feats = FeatureHooks(net, ["block1"], detach=True, transform=lambda t: t.mean((2, 3))).run(x)
    assert feats["block1"].shape == (2, 4) and not feats["block1"].requires_grad


def test_unknown_layer_lists_close_matches():
    net = SmallNet()
    with pytest.raises(ValueError, match="Did you mean .block1."):
        FeatureHooks(net, ["blok1"])
    with pytest.raises(ValueError, match="duplicates"):
        resolve_layer_names(net, ["block1", "block1"])
    with pytest.raises(ValueError, match="at least one"):
        resolve_layer_names(net, [])


def test_layer_not_on_path():
    class Skip(SmallNet):
        def forward(self, x):
            return self.head(self.block1(x).mean((2, 3)).repeat(1, 2))

    with pytest.raises(RuntimeError, match="block2"):
        FeatureHooks(Skip(), ["block2"]).run(torch.rand(1, 1, 8, 8))


def test_presets_torchvision():
    r50 = torchvision.models.resnet50(num_classes=2)
    assert default_layer_names(r50) == ("layer1.0", "layer2.0", "layer3.0", "layer4.0")
    vgg = torchvision.models.vgg16(num_classes=2)
    names = default_layer_names(vgg)
    assert names == ("features.6", "features.13", "features.20", "features.27")
    # 3rd, 6th, 9th and 12th ReLU of VGG-16
    relus = [f"features.{i}" for i, m in enumerate(vgg.features) if isinstance(m, nn.ReLU)]
    assert tuple(relus[i - 1] for i in (3, 6, 9, 12)) == names
    r18 = torchvision.models.resnet18(num_classes=2)
    _, feats = FeatureHooks(r18).run(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in feats.values()] == [64, 128, 256, 512]


def test_presets_monai():
    from monai.networks.nets import DenseNet121, resnet18

    d = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    _, feats = FeatureHooks(d).run(torch.rand(1, 1, 64, 64))
    assert len(feats) == 4
    r = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2)
    _, feats = FeatureHooks(r).run(torch.rand(1, 1, 16, 32, 32))
    assert all(f.ndim == 5 for f in feats.values())
    with pytest.raises(ValueError, match="no layer preset"):
        default_layer_names(SmallNet())


def test_pool_features():
    pooled = pool_features({"a": torch.ones(2, 3, 4, 4), "b": torch.ones(2, 5, 2, 2, 2), "c": torch.ones(2, 7)})
    assert [v.shape for v in pooled.values()] == [(2, 3), (2, 5), (2, 7)]
    with pytest.raises(ValueError, match="'d'"):
        pool_features({"d": torch.ones(3)})


def test_input_pseudo_layer():
    from monai_aegis.networks import INPUT_LAYER, FeatureHooks, resolve_layer_names

    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU())
    assert resolve_layer_names(net, [INPUT_LAYER, "1"]) == (INPUT_LAYER, "1")
    x = torch.rand(2, 1, 5, 5, requires_grad=True)
    out, feats = FeatureHooks(net, [INPUT_LAYER, "1"]).run(x)
    assert list(feats) == [INPUT_LAYER, "1"] and feats[INPUT_LAYER] is x
    _, feats = FeatureHooks(net, [INPUT_LAYER], detach=True).run(x)
    assert not feats[INPUT_LAYER].requires_grad
    assert not net._forward_pre_hooks  # removed afterwards


def test_hooked_batches_is_the_batched_hooked_forward():
    from toys import tiny_net

    from monai_aegis.networks import FeatureHooks, hooked_batches

    torch.manual_seed(0)
    net = tiny_net(1, 2).eval()
    x = torch.rand(10, 1, 8, 8, requires_grad=True)
    pre = lambda t: t.clamp(0.2, 0.8)  # noqa: E731
    batches = list(hooked_batches(net, x, ["conv1", "act2"], pre, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    logits = torch.cat([b[0] for b in batches])
    ref_logits, ref = FeatureHooks(net, ["conv1", "act2"]).run(pre(x))
    assert torch.allclose(logits, ref_logits, atol=1e-6) and not logits.requires_grad
    assert torch.allclose(torch.cat([b[1]["act2"] for b in batches]), ref["act2"], atol=1e-6)
    assert list(batches[0][1]) == ["conv1", "act2"]
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed afterwards
    plain = list(hooked_batches(net, x, [], pre, batch_size=4))  # no layers: the logits alone
    assert all(f == {} for _, f in plain) and torch.equal(torch.cat([b[0] for b in plain]), logits)
