"""Wrapping pretrained classifiers: checkpoint formats, clear errors, and the ResNet-50 / DenseNet121 presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_aegis.bundle import load_network, prepare_classifier
from monai_aegis.networks import build_aegis
from monai_aegis.networks.nets import small_vgg


def _net() -> nn.Module:
    return small_vgg(1, 2, width=4)


def test_state_dict_formats(tmp_path):
    src = _net()
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, tmp_path / "nested.pth")
    for name in ("plain.pt", "nested.pth"):
        dst = load_network(_net(), tmp_path / name)
        assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
        assert not dst.training


def test_safetensors_checkpoint(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    src = _net()
    st.save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    dst = load_network(_net(), tmp_path / "w.safetensors")
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


def test_torchscript_checkpoint_replaces_network(tmp_path):
    src = _net().eval()
    torch.jit.save(torch.jit.script(src), str(tmp_path / "model.ts"))
    model = load_network(None, tmp_path / "model.ts")
    x = torch.rand(2, 1, 32, 32)
    assert isinstance(model, torch.jit.ScriptModule)
    assert torch.allclose(model(x), src(x), atol=1e-6)
    with pytest.raises(ValueError, match="TorchScript"):  # the Shield needs hooks: a clear error, not torch's
        build_aegis(model, (1, 32, 32), 2, layer_names=["block1"])


def test_bad_checkpoints_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_network(_net(), tmp_path / "missing.pt")
    torch.save(small_vgg(1, 2, width=8).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_network(_net(), tmp_path / "other.pt")
    torch.save({"epoch": 1, "note": "x"}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="not a state dict"):
        load_network(_net(), tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="give a classifier checkpoint"):
        prepare_classifier(_net(), "", None)


def test_prepare_classifier_trains_and_saves(tmp_path):
    from monai_aegis.data import load_sample_arrays

    x, y = load_sample_arrays("train", 32)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[idx], y[idx]
    batches = [{"image": xb, "label": yb} for xb, yb in zip(x[:64].split(16), y[:64].split(16))]
    loader = batches  # any re-iterable of {"image", "label"} batches
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = prepare_classifier(net, None, loader, loader, epochs=1, save_path=tmp_path / "c.pt")
    assert not out.training
    assert any(not torch.equal(v, before[k]) for k, v in out.state_dict().items() if v.is_floating_point())
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in out.state_dict().items())


def _batches(n=64, size=32):
    from monai_aegis.data import load_sample_arrays

    x, y = load_sample_arrays("train", size)
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:n]
    return [{"image": xb, "label": yb} for xb, yb in zip(x[idx].split(16), y[idx].split(16))]


def _seeded_net():
    torch.manual_seed(0)  # as the bundle's set_determinism: the same architecture starts from the same weights
    return _net()


def test_prepare_classifier_resume_reuses_only_matching_weights(tmp_path, monkeypatch, caplog):
    """resume=True reuses classifier.pt when classifier.json records the same settings and these weights;
    other settings, a replaced file or a missing record retrain, and the log says why."""
    import logging

    import monai_aegis.bundle.classifier as mod

    loader, path = _batches(), tmp_path / "c.pt"
    kw = dict(epochs=1, save_path=path, resume=True, settings={"dataset": "kermany", "max_items": 64})
    first = prepare_classifier(_seeded_net(), None, loader, None, **kw)
    record = (tmp_path / "c.json").read_text()
    assert '"initial_weights"' in record and '"max_items": 64' in record
    trained = {k: v.clone() for k, v in first.state_dict().items()}
    calls = []
    real = mod.train_classifier
    monkeypatch.setattr(mod, "train_classifier", lambda *a, **k: calls.append(1) or real(*a, **k))
    with caplog.at_level(logging.INFO, logger="monai_aegis.bundle.classifier"):
        again = prepare_classifier(_seeded_net(), None, loader, None, **kw)
    assert calls == [] and "reused" in caplog.text
    assert all(torch.equal(v, trained[k]) for k, v in again.state_dict().items())

    cases = [  # (change, expected reason in the log)
        (dict(kw, epochs=2), "other settings (epochs: 1 -> 2)"),
        (dict(kw, settings={"dataset": "kermany", "max_items": 32}), "max_items: 64 -> 32"),
        (dict(kw, resume=False), "classifier: trained the classifier"),
    ]
    for change, reason in cases:
        prepare_classifier(_seeded_net(), None, loader, None, **kw)  # restore the matching file and record
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="monai_aegis.bundle.classifier"):
            prepare_classifier(_seeded_net(), None, loader, None, **change)
        assert reason in caplog.text, caplog.text
    torch.save(_net().state_dict(), path)  # weights replaced behind the record's back
    torch.manual_seed(0)
    net = _net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    n = len(calls)
    monkeypatch.setattr(mod, "train_classifier", lambda net, *a, **k: calls.append(
        all(torch.equal(v, init[k]) for k, v in net.state_dict().items())) or real(net, *a, **k))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_aegis.bundle.classifier"):
        prepare_classifier(net, None, loader, None, **kw)
    assert "not the file" in caplog.text and calls[n:] == [True]  # retrained from the initial weights
    (tmp_path / "c.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_aegis.bundle.classifier"):
        prepare_classifier(_seeded_net(), None, loader, None, **kw)
    assert "c.json' (the record of how 'c.pt' was made) is missing" in caplog.text


def test_prepare_classifier_resume_checks_the_adversarial_file(tmp_path, caplog):
    """An existing fine-tuned file is reused only for the same AT settings on the same base classifier."""
    import logging

    loader = _batches(32)
    at = {"eps": 2 / 256, "epochs": 1, "steps": 1, "lr": 1e-4}
    kw = dict(epochs=1, save_path=tmp_path / "c.pt", adversarial_save_path=tmp_path / "at.pt", resume=True)
    first = prepare_classifier(_seeded_net(), None, loader, None, adversarial=at, **kw)
    tuned = {k: v.clone() for k, v in first.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="monai_aegis.bundle.classifier"):
        again = prepare_classifier(_seeded_net(), None, loader, None, adversarial=at, **kw)
    assert "reused the adversarially fine-tuned" in caplog.text
    assert all(torch.equal(v, tuned[k]) for k, v in again.state_dict().items())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monai_aegis.bundle.classifier"):
        prepare_classifier(_seeded_net(), None, loader, None, adversarial={**at, "eps": 4 / 256}, **kw)
    assert ("training the adversarially fine-tuned classifier ('at.pt' was made with other settings "
            "(eps: 0.0078125 -> 0.015625))") in caplog.text


def test_fake_torchscript_is_a_clear_error(tmp_path):
    import zipfile

    from monai_aegis.bundle import load_network

    fake = tmp_path / "fake.pt"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("archive/constants.pkl", b"garbage")
    with pytest.raises(ValueError, match="looks like a TorchScript archive but cannot be loaded"):
        load_network(None, fake)
