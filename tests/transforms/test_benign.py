"""Tests for the benign acquisition shifts (RandBenignShift / RandBenignShiftd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_aegis.networks.layers import jpeg_compress
from monai_aegis.transforms import RandBenignShift, RandBenignShiftD, RandBenignShiftd, RandBenignShiftDict


def _image(b=6, size=32):
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = (0.3 + 0.4 * torch.sin(6 * xx) * torch.cos(4 * yy)).clamp(0, 1)
    return (base.expand(b, 1, size, size) + 0.05 * torch.rand(b, 1, size, size, generator=g)).clamp(0, 1)


def test_aliases():
    assert RandBenignShiftD is RandBenignShiftd and RandBenignShiftDict is RandBenignShiftd


def test_seeded_batch_in_range_and_input_untouched():
    x = _image()
    before = x.clone()
    a = RandBenignShift(prob=1.0, p_each=1.0)
    a.set_random_state(3)
    b = RandBenignShift(prob=1.0, p_each=1.0)
    b.set_random_state(3)
    out_a, out_b = a(x), b(x)
    assert torch.equal(out_a, out_b)  # seeded: reproducible
    assert torch.equal(x, before)  # never writes into the caller's tensor
    assert out_a.shape == x.shape and out_a.dtype == x.dtype
    assert out_a.min() >= 0 and out_a.max() <= 1
    # JPEG runs last with p_each=1: the result lies on the 8-bit grid
    assert torch.allclose(out_a * 255, (out_a * 255).round(), atol=1e-3)
    # independent draws per image: no two images shifted the same way
    diffs = (out_a - x).flatten(1)
    assert all(not torch.allclose(diffs[i], diffs[j]) for i in range(len(x)) for j in range(i))
    # a benign shift is small on average, but not nothing
    change = (out_a - x).abs().mean().item()
    assert 0.005 < change < 0.15


def test_components_one_at_a_time():
    x = _image(4)
    only = {"scale": (1.0, 1.0), "resample": (1.0, 1.0), "gamma": (1.0, 1.0), "noise_std": (0.0, 0.0),
            "jpeg_quality": (100, 100)}
    t = RandBenignShift(prob=1.0, p_each=1.0, **{**only, "jpeg_quality": (70, 70)})
    assert torch.allclose(t(x), jpeg_compress(x, 70))
    gamma_only = RandBenignShift(prob=1.0, p_each=1.0, **{**only, "gamma": (2.0, 2.0), "jpeg_quality": (100, 100)})
    gamma_only.set_random_state(0)
    # gamma 2 then JPEG 100 (near lossless) ~ x ** 2
    assert torch.allclose(gamma_only(x), x**2, atol=0.02)
    t = RandBenignShift(prob=1.0, p_each=1.0, **{**only, "scale": (0.5, 0.5)})
    out = t(x)
    # zoomed out by 2 on both axes with border padding: the centre holds the whole image at half size
    half = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert (out[:, :, 8:24, 8:24] - half).abs().mean() < 0.05


def test_prob_zero_is_identity_and_single_image_and_numpy():
    x = _image(2)
    assert RandBenignShift(prob=0.0)(x) is x
    t = RandBenignShift(prob=1.0)
    t.set_random_state(0)
    assert t(x[0]).shape == x[0].shape
    arr = x[0].numpy()
    out = t(arr)
    assert isinstance(out, np.ndarray) and out.shape == arr.shape


def test_dictionary_same_draw_for_every_key():
    x = _image(1)[0]
    d = RandBenignShiftd(keys=["image", "copy"], prob=1.0, p_each=1.0)
    d.set_random_state(5)
    out = d({"image": x, "copy": x.clone(), "label": 1})
    assert torch.equal(out["image"], out["copy"]) and out["label"] == 1
    assert not torch.equal(out["image"], x)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="gamma"):
        RandBenignShift(gamma=(1.5, 1.0))
    with pytest.raises(ValueError, match="jpeg_quality"):
        RandBenignShift(jpeg_quality=(0, 90))
    with pytest.raises(ValueError, match="p_each"):
        RandBenignShift(p_each=2.0)
    t = RandBenignShift(prob=1.0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        t(torch.rand(4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]|range"):
        t(torch.rand(1, 1, 8, 8) * 3)
    with pytest.raises(ValueError, match="randomize=False"):
        RandBenignShift(prob=1.0)(torch.rand(1, 8, 8), randomize=False)
