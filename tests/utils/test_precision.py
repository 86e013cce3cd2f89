"""Reduced precision for the model only: the ``amp`` switch, the autocast inferer, and classifier training."""

from __future__ import annotations

import logging

import pytest
import torch
from toys import make_data, tiny_net

from monai_aegis.engines import train_classifier
from monai_aegis.utils import AutocastInferer, autocast, full_precision, resolve_amp

def test_resolve_amp_spellings():
    assert resolve_amp(False) is None and resolve_amp(None) is None
    assert resolve_amp("bf16") is torch.bfloat16 and resolve_amp("BFloat16") is torch.bfloat16
    assert resolve_amp(True, "cuda") is torch.float16 and resolve_amp("fp16", "cuda:0") is torch.float16
    assert resolve_amp("bf16", "cuda") is torch.bfloat16
    with pytest.raises(ValueError, match="not supported on the CPU"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="amp must be"):
        resolve_amp("int8")


def test_true_follows_the_processor(monkeypatch, caplog):
    import monai_aegis.utils.precision as precision

    monkeypatch.setattr(precision, "_WARNED", set())  # the warning is once per process: start afresh
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert resolve_amp(True, "cpu") is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="monai_aegis.utils.precision"):
        assert resolve_amp(True, "cpu") is None
    assert "no native bfloat16" in caplog.text


def test_dtype_spellings_and_full_precision():
    assert resolve_amp(torch.bfloat16) is torch.bfloat16
    with pytest.raises(ValueError, match="as a dtype"):
        resolve_amp(torch.float64)
    half = torch.ones(2, dtype=torch.bfloat16)
    assert full_precision(half).dtype == torch.float32
    double = torch.ones(2, dtype=torch.float64)
    assert full_precision(double) is double  # a float64 model keeps float64 outputs
    assert full_precision("not a tensor") == "not a tensor"


def test_autocast_context():
    lin = torch.nn.Linear(4, 3)
    x = torch.rand(2, 4)
    with autocast("cpu", None):
        assert lin(x).dtype == torch.float32
    with autocast("cpu", torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
    assert lin(x).dtype == torch.float32  # restored on exit


def test_inferer_hands_back_float32_close_to_full_precision():
    torch.manual_seed(0)
    net = tiny_net().eval()
    x, _ = make_data(8, seed=3)
    with torch.no_grad():
        full = net(x)
        low = AutocastInferer("cpu", torch.bfloat16)(x, net)
        same = AutocastInferer("cpu", None)(x, net)
    assert low.dtype == torch.float32 and torch.equal(same, full)
    assert not torch.equal(low, full)  # it really ran in bfloat16
    assert torch.allclose(low, full, atol=0.05, rtol=0.05)


def _accuracy(net, x, y):
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def test_train_classifier_in_bfloat16():
    """Explicit ``"bf16"`` runs on any CPU (emulated where it has no native bfloat16: slower, same numerics)."""
    torch.manual_seed(0)
    x, y = make_data(192, seed=1)
    loader = [{"image": x[i:i + 32], "label": y[i:i + 32]} for i in range(0, len(y), 32)]
    net = tiny_net()
    info = train_classifier(net, loader, epochs=15, lr=1e-2, amp="bf16")
    x_test, y_test = make_data(96, seed=2)
    assert info["amp"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the weights stay in float32
    assert _accuracy(net.eval(), x_test, y_test) >= 0.9


def test_run_in_precision_hands_back_float32():
    from monai_aegis.utils import run_in_precision

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    x = torch.rand(5, 4)
    assert torch.equal(run_in_precision(lin, x, None), lin(x))  # full precision: the plain call
    low = run_in_precision(lin, x, "bf16")
    assert low.dtype == torch.float32 and not torch.equal(low, lin(x)) and torch.allclose(low, lin(x), atol=0.05)
    pair = run_in_precision(lambda z: (lin(z), {"f": z}), x, "bf16")
    assert isinstance(pair, tuple) and pair[0].dtype == torch.float32 and pair[1]["f"] is x
    with pytest.raises(ValueError, match="amp must be"):
        run_in_precision(lin, x, "int8")
