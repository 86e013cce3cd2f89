"""Adversarial fine-tuning of the classifier (PGD-AT, TRADES)."""

from __future__ import annotations

import copy

import pytest
import torch
from toys import tiny_net, trained_tiny

from monai_aegis.attacks import PGD
from monai_aegis.engines import AdversarialClassifierUpdate, TradesKL, adversarially_finetune

EPS = 0.01


def _robust_accuracy(model, x, y, eps=EPS):
    torch.manual_seed(0)
    res = PGD(model, eps=eps, steps=10)(x, y)
    return float((res.predictions == y).float().mean())


@pytest.fixture(scope="module")
def toy():
    model, x, y, x_test, y_test = trained_tiny(48)
    loader = [{"image": x[i:i + 48], "label": y[i:i + 48]} for i in range(0, len(y), 48)]
    return model, loader, x_test, y_test


@pytest.mark.parametrize("method", ["trades", "pgd"])
def test_adversarial_finetuning_raises_robust_accuracy(toy, method):
    model, loader, x_test, y_test = toy
    robust_model = copy.deepcopy(model)
    before = _robust_accuracy(model, x_test, y_test)
    torch.manual_seed(0)
    info = adversarially_finetune(robust_model, loader, eps=EPS, epochs=8, steps=5, lr=3e-3, method=method, beta=1.0,
                                  clean_weight=1.0)
    after = _robust_accuracy(robust_model, x_test, y_test)
    with torch.no_grad():
        clean = float((robust_model(x_test).argmax(1) == y_test).float().mean())
    assert info["method"] == method and info["eps"] == EPS and 0.0 <= info["adv_accuracy"] <= 1.0
    assert after > before + 0.1, (before, after)
    assert clean >= 0.9
    assert not robust_model.training  # handed back in eval mode


def test_frozen_normalisation_keeps_the_running_statistics(toy):
    model, loader, _, _ = toy
    m = copy.deepcopy(model)
    stats = m.bn1.running_mean.clone()
    adversarially_finetune(m, loader[:1], eps=EPS, epochs=1, steps=2, lr=1e-3)
    assert torch.equal(m.bn1.running_mean, stats)
    m2 = copy.deepcopy(model)
    adversarially_finetune(m2, loader[:1], eps=EPS, epochs=1, steps=2, lr=1e-3, freeze_norm=False)
    assert not torch.equal(m2.bn1.running_mean, stats)


def test_trades_objective_is_zero_at_the_clean_point_and_grows():
    model = tiny_net().eval()
    x = torch.rand(4, 3, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    obj = TradesKL().bind(lambda t: (model(t), {}), x, y, None)
    with torch.no_grad():
        assert torch.allclose(obj(model(x), {}, y, None), torch.zeros(4), atol=1e-6)
        assert (obj(model((x + 0.3).clamp(0, 1)), {}, y, None) > 0).all()
    with pytest.raises(RuntimeError, match="unbound"):
        TradesKL()(model(x), {}, y, None)


def test_update_checks():
    with pytest.raises(ValueError, match="mart"):
        AdversarialClassifierUpdate("mart")
    with pytest.raises(ValueError, match="steps"):
        AdversarialClassifierUpdate("pgd", steps=0)


def test_balanced_class_weights_and_batch_preparation():
    from monai_aegis.engines import balanced_class_weights, prepare_image_label

    net = tiny_net(1, 3)
    x = torch.rand(8, 1, 16, 16)
    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])  # class 2 absent
    w = balanced_class_weights(net, [{"image": x[:4], "label": y[:4]}, {"image": x[4:], "label": y[4:].view(-1, 1)}])
    assert w.shape == (3,)  # one weight per output, even for a class the loader never shows
    assert w.tolist() == pytest.approx([9 / (3 * 6), 9 / (3 * 2), 9 / (3 * 1)])  # counts 6, 2, 0 -> 1
    xb, yb = prepare_image_label({"image": x, "label": y.view(-1, 1).int()}, "cpu")
    assert torch.equal(xb, x) and yb.dtype == torch.int64 and yb.shape == (8,)
    with pytest.raises(ValueError, match="no batches"):
        balanced_class_weights(net, [])


@pytest.mark.parametrize("memory_format, size, expect", [("auto", 128, True), ("auto", 16, False),
                                                         ("channels_last", 16, True), ("preserve", 128, False)])
def test_training_memory_format(memory_format, size, expect):
    """Batches reach the network channels-last when asked (``auto``: 2-D images of at least 128 px), and the network
    is handed back in the standard layout."""
    from monai_aegis.engines import train_classifier

    torch.manual_seed(0)
    net = tiny_net(num_classes=2)
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)
                                                              and not args[0].is_contiguous()))
    x = torch.rand(8, 3, size, size)  # 3 channels: with one, both layouts have the same strides
    loader = [{"image": x, "label": torch.tensor([0, 1] * 4)}]
    train_classifier(net, loader, epochs=1, lr=1e-3, class_weights=False, memory_format=memory_format)
    assert seen and all(s == expect for s in seen)
    assert all(p.is_contiguous() for p in net.parameters())
    with pytest.raises(ValueError, match="memory_format"):
        train_classifier(net, loader, epochs=1, memory_format="nhwc")


def test_labelled_batch_names_what_is_missing():
    from types import SimpleNamespace

    from monai.data import MetaTensor

    from monai_aegis.engines import labelled_batch, prepare_image_label

    engine = SimpleNamespace(prepare_batch=lambda b, d, nb, **kw: (b["image"], b.get("label")),
                             state=SimpleNamespace(device="cpu"), non_blocking=False, to_kwargs={})
    x, y = labelled_batch(engine, {"image": MetaTensor(torch.rand(3, 1, 4, 4)), "label": torch.tensor([[0], [1], [1]])},
                          "the test")
    assert type(x) is torch.Tensor and y.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="the test needs class labels"):
        labelled_batch(engine, {"image": torch.rand(2, 1, 4, 4)}, "the test")
    with pytest.raises(ValueError, match="batch data"):
        labelled_batch(engine, None, "the test")
    with pytest.raises(ValueError, match="label"):
        labelled_batch(engine, {"image": torch.rand(2, 1, 4, 4), "label": torch.tensor([0, 5])}, "x", num_classes=2)
    assert prepare_image_label({"image": torch.zeros(2, 1), "label": torch.tensor([[1], [0]])})[1].tolist() == [1, 0]
