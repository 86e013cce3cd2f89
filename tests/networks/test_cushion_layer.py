"""Tests for the Cushion math layer: JPEG, bit depth, TVM, BPDA and CushionLayer (kornia-style vocabulary)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from monai_aegis.networks.layers import (
    CUSHION_PRESETS,
    CushionLayer,
    bpda,
    cushion_from_name,
    jpeg_compress,
    reduce_bit_depth,
    tv_minimize,
)

Image = pytest.importorskip("PIL.Image")


def pillow_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Reference: per-image Pillow round trip of a (B, C, H, W) batch, C in {1, 3}, at Pillow's defaults."""
    out = []
    for img in x.double().numpy():
        levels = np.rint(img.transpose(1, 2, 0) * 255).astype(np.uint8)
        pil = Image.fromarray(levels[..., 0] if levels.shape[-1] == 1 else levels)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        dec = np.asarray(Image.open(buf)).reshape(levels.shape)
        out.append(dec.transpose(2, 0, 1) / 255.0)
    return torch.from_numpy(np.stack(out))


def smooth_plus_noise(shape: tuple[int, ...], noise: float = 0.08) -> torch.Tensor:
    """A smooth image (low frequencies) plus i.i.d. noise (high frequencies), clipped to [0, 1]."""
    h, w = shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = 0.5 + 0.25 * torch.sin(2 * torch.pi * xx) * torch.cos(2 * torch.pi * yy)
    return (base.expand(shape) + noise * torch.randn(shape)).clamp(0, 1)


def band_energy(x: torch.Tensor) -> tuple[float, float]:
    """(low-band, high-band) spectral energy of the mean-free image: |f| < 0.06 and |f| > 0.25 cycles/pixel."""
    spec = torch.fft.fft2(x.double() - x.double().mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    fy = torch.fft.fftfreq(x.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(x.shape[-1]).abs()[None, :]
    radius = torch.sqrt(fy**2 + fx**2)
    return float(spec[..., radius < 0.06].sum()), float(spec[..., radius > 0.25].sum())


def total_variation(x: torch.Tensor) -> float:
    dims = range(2, x.ndim)
    return float(sum(torch.diff(x, dim=d).abs().sum() for d in dims))


METHODS = ["jpeg", "bit_depth", "tvm", "identity"]


# ------------------------------------------------------------------------------------------------ smoke / shapes


@pytest.mark.parametrize("method", METHODS)
def test_smoke(method):
    x = torch.rand(2, 3, 16, 16)
    layer = CushionLayer(method)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert method in repr(layer)


@pytest.mark.parametrize("method", ["jpeg", "bit_depth", "tvm"])
@pytest.mark.parametrize(
    "shape", [(1, 1, 16, 16), (2, 3, 17, 19), (1, 4, 8, 8), (2, 1, 16, 16, 3), (1, 3, 8, 8, 2), (1, 2, 8, 8, 2)]
)
def test_cardinality(method, shape):
    x = torch.rand(shape)
    y = CushionLayer(method, tv_max_iter=20)(x)
    assert y.shape == x.shape
    assert not torch.equal(y, x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("method", ["jpeg", "bit_depth", "tvm"])
def test_dtypes_preserved(method, dtype):
    x = torch.rand(1, 3, 8, 8).to(dtype)
    y = CushionLayer(method, tv_max_iter=10)(x)
    assert y.dtype == dtype
    expected = CushionLayer(method, tv_max_iter=10)(x.float())
    assert torch.allclose(y.float(), expected, atol=1e-2)


@pytest.mark.parametrize("method", ["jpeg", "bit_depth", "tvm"])
def test_module_equals_functional(method):
    x = torch.rand(2, 3, 16, 16)
    functional = {
        "jpeg": lambda t: jpeg_compress(t, quality=70),
        "bit_depth": lambda t: reduce_bit_depth(t, bits=4),
        "tvm": lambda t: tv_minimize(t, weight=0.05, eps=1e-4, max_iter=30),
    }[method]
    layer = CushionLayer(method, quality=70, bits=4, tv_weight=0.05, tv_eps=1e-4, tv_max_iter=30)
    assert torch.equal(layer(x), functional(x))


# ------------------------------------------------------------------------------------------------ JPEG


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("quality", [90, 80, 70])
@pytest.mark.parametrize("backend", ["auto", "pillow"])
def test_jpeg_matches_pillow(channels, quality, backend):
    x = smooth_plus_noise((3, channels, 24, 40))
    y = jpeg_compress(x, quality=quality, backend=backend)
    ref = pillow_jpeg(x, quality)
    assert (y.double() - ref).abs().max() * 255 <= 1 + 1e-6
    # on the 8-bit grid, and visibly different from the input (it really compressed)
    levels = y.double() * 255
    assert (levels - levels.round()).abs().max() < 1e-4
    assert (y - x).abs().max() > 2 / 255


def test_jpeg_threads_do_not_change_result():
    x = torch.rand(5, 3, 16, 24)
    assert torch.equal(jpeg_compress(x, num_workers=1), jpeg_compress(x, num_workers=3))


def test_jpeg_other_channel_counts_are_channelwise_grayscale():
    x = torch.rand(2, 2, 16, 16)
    y = jpeg_compress(x)
    for c in range(2):
        assert torch.equal(y[:, c : c + 1], jpeg_compress(x[:, c : c + 1].contiguous()))


@pytest.mark.parametrize("channels", [1, 3, 2])
def test_jpeg_volumes_are_slicewise(channels):
    x = torch.rand(2, channels, 16, 12, 3)  # MONAI layout (B, C, H, W, D): axial slices along the last dim
    y = jpeg_compress(x)
    assert y.is_contiguous()
    for d in range(3):
        assert torch.equal(y[..., d], jpeg_compress(x[..., d].contiguous()))
    z = jpeg_compress(x, slice_dim=2)  # PyTorch layout (B, C, D, H, W)
    for d in range(16):
        assert torch.equal(z[:, :, d], jpeg_compress(x[:, :, d].contiguous()))
    assert torch.equal(CushionLayer("jpeg", slice_dim=2)(x), z)
    with pytest.raises(ValueError, match="slice_dim"):
        jpeg_compress(x, slice_dim=1)


def test_jpeg_lower_quality_changes_more():
    x = smooth_plus_noise((2, 3, 32, 32))
    err = [float((jpeg_compress(x, q) - x).abs().mean()) for q in (90, 80, 70)]
    assert err[0] < err[1] < err[2]


@pytest.mark.parametrize(
    "method, noise, high_ratio, low_change",
    [("jpeg", 0.01, 0.5, 0.02), ("tvm", 0.05, 0.05, 0.15)],  # JPEG-80 removes perturbations of a few grey levels
)
def test_cushion_removes_high_frequencies(method, noise, high_ratio, low_change):
    x = smooth_plus_noise((1, 1, 64, 64), noise=noise)
    y = CushionLayer(method)(x)
    low_x, high_x = band_energy(x)
    low_y, high_y = band_energy(y)
    assert high_y < high_ratio * high_x
    assert abs(low_y - low_x) < low_change * low_x


# ------------------------------------------------------------------------------------------------ bit depth


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bit_depth_exact_on_all_levels(bits, dtype):
    levels = torch.arange(256)
    x = (levels.to(dtype) / 255).reshape(1, 1, 16, 16)
    shift = 8 - bits
    expected = torch.tensor([(v >> shift) << shift for v in range(256)], dtype=dtype).reshape(1, 1, 16, 16) / 255
    assert torch.equal(reduce_bit_depth(x, bits=bits), expected)


def test_bit_depth_rounds_to_nearest_level_first():
    # 10.4/255 quantises to level 10, 10.6/255 to level 11; keeping 5 bits clears the low 3 bits (-> 8).
    x = torch.tensor([10.4, 10.6, 15.6, 255.0]).reshape(1, 1, 2, 2) / 255
    y = reduce_bit_depth(x, bits=5) * 255
    assert torch.allclose(y.flatten(), torch.tensor([8.0, 8.0, 16.0, 248.0]), atol=1e-4)


# ------------------------------------------------------------------------------------------------ TVM


def test_tvm_lowers_total_variation():
    x = smooth_plus_noise((2, 3, 24, 24))
    y = tv_minimize(x)
    assert total_variation(y) < 0.5 * total_variation(x)


@pytest.mark.parametrize("eps", [2e-4, 0.0])
def test_tvm_matches_skimage_2d_rgb(eps):
    restoration = pytest.importorskip("skimage.restoration")
    x = smooth_plus_noise((2, 3, 20, 23)).double()
    y = tv_minimize(x, weight=0.1, eps=eps, max_iter=60)
    ref = np.stack(
        [restoration.denoise_tv_chambolle(b, weight=0.1, eps=eps, max_num_iter=60, channel_axis=0) for b in x.numpy()]
    )
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12)


def test_tvm_matches_skimage_3d_float32():
    restoration = pytest.importorskip("skimage.restoration")
    x = torch.rand(1, 2, 5, 12, 12)
    y = tv_minimize(x, weight=0.2)
    ref = np.stack([restoration.denoise_tv_chambolle(c, weight=0.2) for c in x[0].numpy()])[None]
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-5)


def test_tvm_per_image_stopping_matches_separate_runs():
    # a noisy image and a nearly flat one converge at different iterations; batching must not change either.
    x = torch.cat([smooth_plus_noise((1, 1, 16, 16)), 0.5 + 0.01 * torch.rand(1, 1, 16, 16)]).double()
    batched = tv_minimize(x)
    assert torch.allclose(batched[:1], tv_minimize(x[:1]), atol=1e-14, rtol=0)
    assert torch.allclose(batched[1:], tv_minimize(x[1:]), atol=1e-14, rtol=0)


def test_tvm_gradcheck():
    x = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tv_minimize(t, weight=0.1, eps=0.0, max_iter=8), (x,))


# ------------------------------------------------------------------------------------------------ BPDA


@pytest.mark.parametrize("name", sorted(CUSHION_PRESETS))
def test_bpda_value_is_true_cushion_and_gradient_identity(name):
    layer = cushion_from_name(name, tv_max_iter=20) if name == "tvm" else cushion_from_name(name)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = layer(x)
    with torch.no_grad():
        assert torch.equal(y, layer(x))
    grad_out = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, grad_out)
    assert torch.equal(gx, grad_out)


def test_bpda_gradient_equals_callable_proxy():
    def proxy(t: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * t) * t

    layer = CushionLayer("jpeg", proxy=proxy)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = layer(x)
    assert torch.equal(y.detach(), jpeg_compress(x.detach()))
    grad_out = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, grad_out)
    xd = x.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(proxy(xd), xd, grad_out)
    assert torch.equal(gx, expected)
    assert "proxy='proxy'" in repr(layer)


def test_bpda_gradcheck_with_differentiable_forward():
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda t: torch.tanh(2 * t) * 0.5  # noqa: E731
    assert torch.autograd.gradcheck(lambda t: bpda(t, fn, proxy=fn), (x,))


def test_tvm_smooth_proxy_value_and_gradient():
    layer = CushionLayer("tvm", tv_eps=0.0, tv_max_iter=8, proxy="smooth")
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        true_value = tv_minimize(x, eps=0.0, max_iter=8)
    assert torch.equal(layer(x), true_value)
    assert torch.autograd.gradcheck(layer, (x,))


def test_bit_depth_has_no_smooth_surrogate():
    with pytest.raises(ValueError, match="No smooth surrogate"):
        CushionLayer("bit_depth", proxy="smooth")


def test_jpeg_smooth_proxy_uses_kornia():
    pytest.importorskip("kornia")
    from kornia.enhance import jpeg_codec_differentiable

    layer = CushionLayer("jpeg", quality=80, proxy="smooth")
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = layer(x)
    assert torch.equal(y.detach(), jpeg_compress(x.detach(), 80))
    grad_out = torch.randn_like(x)
    (gx,) = torch.autograd.grad(y, x, grad_out)
    xd = x.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(jpeg_codec_differentiable(xd, torch.tensor([80.0])), xd, grad_out)
    assert torch.allclose(gx, expected, atol=1e-6)
    assert not torch.equal(gx, grad_out)
    # grayscale and 3-D volumes go through the same frame layout as the codec
    for shape in [(1, 1, 16, 16), (1, 3, 16, 16, 2), (1, 2, 16, 16, 2)]:
        xv = torch.rand(shape, requires_grad=True)
        (g,) = torch.autograd.grad(layer(xv).sum(), xv)
        assert g.shape == xv.shape and bool(torch.isfinite(g).all())


def test_bpda_checks_shapes():
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    with pytest.raises(ValueError, match="forward_fn must return"):
        bpda(x, lambda t: t[..., :2])
    y = bpda(x, lambda t: t * 2, proxy=lambda t: t[..., :2])
    with pytest.raises(ValueError, match="proxy must return"):
        y.sum().backward()


def test_gradients_reach_the_input_inside_a_model():
    model = nn.Sequential(CushionLayer("jpeg"), nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert model[1].weight.grad is not None


def test_callable_method():
    def darken(t: torch.Tensor) -> torch.Tensor:
        return t * 0.5

    layer = CushionLayer(darken)
    assert layer.name == "darken"
    x = torch.rand(1, 1, 4, 4, requires_grad=True)
    y = layer(x)
    assert torch.equal(y.detach(), x.detach() * 0.5)
    (gx,) = torch.autograd.grad(y.sum(), x)
    assert torch.equal(gx, torch.ones_like(x))  # identity BPDA, not the true 0.5


# ------------------------------------------------------------------------------------------------ presets


def test_presets_and_names():
    assert {"jpeg90", "jpeg80", "jpeg70", "bit_depth5", "bit_depth4", "tvm", "identity"} <= set(CUSHION_PRESETS)
    for name in CUSHION_PRESETS:
        layer = cushion_from_name(name)
        assert layer.name == name
    assert cushion_from_name("jpeg70").quality == 70
    assert cushion_from_name("bit_depth4").bits == 4
    assert cushion_from_name("jpeg", quality=55).name == "jpeg55"
    assert cushion_from_name("JPEG80", proxy="identity").name == "jpeg80"
    assert CushionLayer("tvm", tv_weight=0.05).name == "tvm0.05"
    assert CushionLayer("jpeg", name="mine").name == "mine"


@pytest.mark.parametrize("name", ["jpeg80", "bit_depth4", "tvm"])
def test_layer_pickles_and_deepcopies(name):
    import copy
    import pickle

    x = torch.rand(1, 3, 8, 8)
    layer = cushion_from_name(name, tv_max_iter=5) if name == "tvm" else cushion_from_name(name)
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert clone.name == layer.name and torch.equal(clone(x), layer(x))


def test_unknown_names():
    with pytest.raises(ValueError, match="jpeg80"):
        cushion_from_name("jpg80")
    with pytest.raises(ValueError):
        CushionLayer("median")
    with pytest.raises(ValueError):
        CushionLayer("jpeg", proxy="straight")


# ------------------------------------------------------------------------------------------------ exceptions


@pytest.mark.parametrize("fn", [jpeg_compress, reduce_bit_depth, tv_minimize, CushionLayer("jpeg")])
def test_exceptions(fn):
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(torch.full((1, 1, 4, 4), float("inf")))
    with pytest.raises(ValueError, match="Scale intensities"):
        fn(torch.rand(1, 1, 4, 4) * 255)
    with pytest.raises(ValueError, match="shape"):
        fn(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="dtype"):
        fn(torch.randint(0, 255, (1, 1, 4, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        fn(torch.rand(0, 1, 4, 4))


def test_parameter_exceptions():
    x = torch.rand(1, 1, 4, 4)
    for q in (0, 101, 80.5, True):
        with pytest.raises(ValueError, match="quality"):
            jpeg_compress(x, quality=q)
    for b in (0, 9):
        with pytest.raises(ValueError, match="bits"):
            reduce_bit_depth(x, bits=b)
    with pytest.raises(ValueError, match="weight"):
        tv_minimize(x, weight=0)
    with pytest.raises(ValueError, match="max_iter"):
        tv_minimize(x, max_iter=0)
    with pytest.raises(ValueError, match="quality"):
        CushionLayer("jpeg", quality=0)


# ------------------------------------------------------------------------------------------------ optional deps


def test_optional_dependencies_fallbacks(monkeypatch):
    from monai_aegis.networks.layers import jpeg as cushion_module  # the codec and kornia proxy live there

    real_optional_import = cushion_module.optional_import

    def without(*modules):
        def fake(module, *args, **kwargs):
            if module in modules:
                return None, False
            return real_optional_import(module, *args, **kwargs)

        return fake

    x = torch.rand(2, 3, 16, 16)
    expected = jpeg_compress(x, backend="pillow")
    monkeypatch.setattr(cushion_module, "optional_import", without("torchvision.io.image"))
    cushion_module._codec.cache_clear()
    try:
        assert torch.equal(jpeg_compress(x), expected)  # "auto" falls back to Pillow
        with pytest.raises(RuntimeError, match="torchvision"):
            jpeg_compress(x, backend="torchvision")
    finally:
        cushion_module._codec.cache_clear()
    monkeypatch.setattr(cushion_module, "optional_import", without("kornia.enhance"))
    with pytest.raises(ImportError, match="pip install kornia"):
        CushionLayer("jpeg", proxy="smooth")



@pytest.mark.parametrize("num_workers", [1, 2])
def test_jpeg_checks_every_frame(num_workers):
    x = torch.rand(4, 3, 8, 8)
    bad = x.clone()
    bad[3, 2, 7, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        jpeg_compress(bad, num_workers=num_workers)
    bad = x.clone()
    bad[2, 0, 0, 0] = 1.01
    with pytest.raises(ValueError, match="Scale intensities"):
        jpeg_compress(bad, num_workers=num_workers)
    edge = x.clone()
    edge[1, 1, 0, 0], edge[3, 0, 1, 1] = 1 + 5e-7, -5e-7  # within check_image_batch's tolerance
    assert torch.equal(jpeg_compress(edge, num_workers=num_workers)[0], jpeg_compress(x[:1]).squeeze(0))


def test_resolve_cushion_is_the_one_conversion():
    from monai_aegis.networks import AegisWrapper, CushionLayer, resolve_cushion

    assert resolve_cushion(None) is None and resolve_cushion("none") is None and resolve_cushion("None") is None
    layer = resolve_cushion("jpeg80")
    assert isinstance(layer, CushionLayer) and layer.get_config()["quality"] == 80
    assert resolve_cushion("jpeg", quality=55).get_config()["quality"] == 55
    assert resolve_cushion(layer) is layer
    custom = torch.nn.Identity()
    assert resolve_cushion(custom) is custom  # any module with the Cushion's contract, as is
    wrapped = resolve_cushion(lambda x: x.clamp(0.1, 0.9))
    assert isinstance(wrapped, CushionLayer) and float(wrapped(torch.zeros(1, 1, 4, 4)).min()) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="without a Cushion"):
        resolve_cushion(None, quality=3)
    with pytest.raises(ValueError, match="existing CushionLayer"):
        resolve_cushion(layer, quality=3)
    with pytest.raises(ValueError, match="must be None"):
        resolve_cushion(3)
    with pytest.raises(ValueError):
        resolve_cushion("jpg80")
    w = AegisWrapper(torch.nn.Conv2d(1, 2, 1), cushion="none")
    assert w.cushion is None and w.cushion_spec() is None
    assert AegisWrapper(torch.nn.Conv2d(1, 2, 1), cushion="tvm").cushion_spec()["method"] == "tvm"
