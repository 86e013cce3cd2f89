"""The Cushion, tier 1 of Medical Aegis: input transforms that round (JPEG, bit depth) or smooth (TVM) away part of
a small change.

One batched implementation serves both faces of the cushion. The functionals (:func:`jpeg_compress`,
:func:`reduce_bit_depth`, :func:`tv_minimize`) and their ``nn.Module`` twin :class:`CushionLayer` work on
``(B, C, *spatial)`` float tensors in ``[0, 1]``; :class:`CushionLayer` goes *inside* a model for training
and attack evaluation, and the MONAI transforms ``monai_aegis.transforms.Cushion``/``Cushiond`` are thin
wrappers for data pipelines.

JPEG and bit-depth reduction are piecewise constant, so an adaptive attacker differentiates through them with
BPDA (Athalye et al., 2018): :func:`bpda` returns the true cushion value and back-propagates the gradient of a
proxy (the identity by default, or a smooth surrogate: the unrolled Chambolle iterations for TVM, kornia's
differentiable JPEG when kornia is installed, or any callable).

References:
    Yao, He, Zhou, "Medical Aegis: Robust adversarial protectors for medical images".
    Guo et al., "Countering adversarial images using input transformations", ICLR 2018.
    Xu et al., "Feature squeezing", NDSS 2018.
    Chambolle, "An algorithm for total variation minimization and applications", JMIV 2004.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Union

import numpy as np
import torch
from monai.utils import look_up_option, optional_import
from torch import nn
from torch.autograd.function import once_differentiable

from monai_aegis.utils import check_image_batch, check_positive

__all__ = [
    "CUSHION_METHODS",
    "CUSHION_PRESETS",
    "CushionLayer",
    "bpda",
    "cushion_from_config",
    "cushion_from_name",
    "resolve_cushion",
    "jpeg_compress",
    "reduce_bit_depth",
    "tv_minimize",
]

#: Built-in cushion methods accepted by :class:`CushionLayer` (a callable is accepted too).
CUSHION_METHODS: tuple[str, ...] = ("jpeg", "bit_depth", "tvm", "identity")

#: Named configurations for the paper's ablation (JPEG 90/80/70, bit depth dropping 3 or 4 of 8 bits, TVM).
#: ``bit_depth5`` keeps 5 bits (drops 3), ``bit_depth4`` keeps 4 bits (drops 4).
CUSHION_PRESETS: dict[str, dict[str, Any]] = {
    "identity": {"method": "identity"},
    "jpeg90": {"method": "jpeg", "quality": 90},
    "jpeg80": {"method": "jpeg", "quality": 80},
    "jpeg70": {"method": "jpeg", "quality": 70},
    "bit_depth5": {"method": "bit_depth", "bits": 5},
    "bit_depth4": {"method": "bit_depth", "bits": 4},
    "tvm": {"method": "tvm"},
}

_DEFAULT_TV_WEIGHT = 0.1
_DEFAULT_TV_EPS = 2.0e-4
_DEFAULT_TV_MAX_ITER = 200
_RANGE_ATOL = 1e-6  # the slack check_image_batch allows around [0, 1]

ProxyType = Union[str, Callable[[torch.Tensor], torch.Tensor], None]


# ---------------------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------------------


def _check_input(x: torch.Tensor, name: str = "x", scan_values: bool = True) -> None:
    """Validate a ``(B, C, H, W)`` / ``(B, C, D, H, W)`` float batch in ``[0, 1]``.

    :func:`monai_aegis.utils.check_image_batch` checks finiteness and range in one ``aminmax`` pass. With
    ``scan_values=False`` only the structure is checked here; the caller checks the values itself and calls
    ``check_image_batch`` when they are not in range.
    """
    if not scan_values and isinstance(x, torch.Tensor) and x.ndim in (4, 5) and x.numel() > 0:
        if x.is_floating_point():
            return
    check_image_batch(x, name, spatial_dims=(2, 3), value_range=(0.0, 1.0))


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}.")
    return int(value)


def _check_slice_dim(slice_dim: Any) -> int:
    """Return the tensor dim (2, 3 or 4) of a ``(B, C, *spatial)`` volume along which it is cut into 2-D slices."""
    if isinstance(slice_dim, bool) or not isinstance(slice_dim, (int, np.integer)) or int(slice_dim) not in (
        -3, -2, -1, 2, 3, 4,
    ):
        raise ValueError(f"slice_dim must be a spatial dim of a 5-D batch (2, 3, 4 or -3, -2, -1), got {slice_dim!r}.")
    return int(slice_dim) % 5


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (and cast back), float32/float64 as they are."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


# ---------------------------------------------------------------------------------------------------------------
# JPEG
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _codec(backend: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """Return ``roundtrip(uint8 (H, W, c), quality) -> uint8 (H, W, c)`` for ``backend`` (resolved lazily)."""
    backend = look_up_option(backend, ("auto", "torchvision", "pillow"))
    if backend in ("auto", "torchvision"):
        tv_image, has_tv = optional_import("torchvision.io.image")
        if has_tv and tv_image._has_image_ops():
            # The kernels behind torchvision.io.encode_jpeg/decode_jpeg. On CPU their list API is a Python loop
            # over these very ops, and the public wrappers emit a DeprecationWarning on every call (torchvision
            # 0.29 moved image I/O to TorchCodec), so the ops are called directly, one frame per worker thread.
            encode, decode = torch.ops.image.encode_jpeg, torch.ops.image.decode_jpeg
            unchanged = tv_image.ImageReadMode.UNCHANGED.value

            def _torchvision_roundtrip(u8_hwc: np.ndarray, quality: int) -> np.ndarray:
                # a CHW view of HWC memory: the encoder's own permute(1, 2, 0).contiguous() becomes a no-op
                chw = torch.from_numpy(u8_hwc).permute(2, 0, 1)
                return decode(encode(chw, quality), unchanged, False).permute(1, 2, 0).numpy()

            return _torchvision_roundtrip
        if backend == "torchvision":
            raise RuntimeError("JPEG backend 'torchvision' needs torchvision with its image extension.")
    pil_image, has_pil = optional_import("PIL.Image")
    if not has_pil:
        raise RuntimeError("JPEG compression needs torchvision or Pillow: `pip install torchvision` (or Pillow).")

    def _pillow_roundtrip(u8_hwc: np.ndarray, quality: int) -> np.ndarray:
        img = pil_image.fromarray(u8_hwc[..., 0] if u8_hwc.shape[-1] == 1 else u8_hwc)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        with pil_image.open(buf) as decoded:
            return np.asarray(decoded).reshape(u8_hwc.shape)

    return _pillow_roundtrip


def _jpeg_frames(pairs: list[tuple[torch.Tensor, torch.Tensor]], quality: int, roundtrip: Callable) -> bool:
    """JPEG round trip of frames ``src (c, H, W) float in [0, 1] -> dst`` (same shape), one frame at a time.

    Every frame is converted while it is cache resident (float CHW -> 8-bit HWC -> codec -> float CHW), with
    scratch buffers reused across the frames, and its value range is checked there too (no separate pass over the
    batch). Only numpy is used here: it is single threaded and releases the GIL, so frames on different worker
    threads run in parallel without nested intra-op thread pools.

    Returns:
        ``False`` as soon as a frame holds NaN/Inf or values clearly outside ``[0, 1]`` (the bounds are twice as
        lenient as ``check_image_batch``'s, so that it is sure to raise then), else ``True``.
    """
    c, h, w = pairs[0][0].shape
    levels = np.empty((h, w, c), dtype=pairs[0][0].numpy().dtype)
    u8 = np.empty((h, w, c), dtype=np.uint8)
    low, high = -255 * 2 * _RANGE_ATOL, 255 * (1 + 2 * _RANGE_ATOL)
    for src, dst in pairs:
        src_np = src.numpy()
        for k in range(c):  # per-channel strided writes beat numpy's generic CHW -> HWC transposition ~2x
            np.multiply(src_np[k], 255, out=levels[..., k])
        if not low <= levels.min() or not levels.max() <= high:  # NaN compares False
            return False
        np.rint(levels, out=u8, casting="unsafe")  # round half to even, as torch.round/np.rint
        decoded = roundtrip(u8, quality)
        np.divide(decoded.transpose(2, 0, 1), 255, out=dst.numpy(), dtype=levels.dtype)
    return True


def _frame_pairs(src: torch.Tensor, dst: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``(B, C, *spatial)`` tensors into matching 2-D frames ``(c, H, W)``, ``c`` in {1, 3}.

    ``dst`` must be contiguous so that its frames are views (written in place).
    """
    b, c = src.shape[:2]
    if c not in (1, 3):  # channel-wise (and, for volumes, slice-wise) grayscale
        src, dst = src.reshape(-1, 1, *src.shape[-2:]), dst.view(-1, 1, *dst.shape[-2:])
        return list(zip(src.unbind(0), dst.unbind(0)))
    if src.ndim == 5:  # slice-wise along dim 2 (the slicing axis has been moved there)
        s, d = src.transpose(1, 2), dst.transpose(1, 2)
        return [(s[i, j], d[i, j]) for i in range(b) for j in range(src.shape[2])]
    return list(zip(src.unbind(0), dst.unbind(0)))


def jpeg_compress(
    x: torch.Tensor,
    quality: int = 80,
    *,
    slice_dim: int = -1,
    backend: str = "auto",
    num_workers: int | None = None,
) -> torch.Tensor:
    """JPEG-compress and decompress a batch with real libjpeg.

    Each image is quantised to 8 bits (``round(255 x)``), encoded at ``quality`` with libjpeg's defaults (4:2:0
    chroma subsampling and the standard YCbCr conversion for RGB, as Pillow does by default), decoded, and
    returned as ``level / 255``. The float<->uint8 and CHW<->HWC conversions are fused per frame (cache resident)
    and frames are spread over ``num_workers`` threads (the codec releases the GIL).

    - 3 or 1 channel(s): RGB or grayscale JPEG.
    - Any other channel count: every channel is compressed on its own as a grayscale image.
    - 3-D volumes: slice-wise, every 2-D slice along ``slice_dim`` is coded as an image. The default ``-1`` cuts
      along the last axis, MONAI's ``(B, C, H, W, D)`` layout (axial slices of a NIfTI/DICOM series loaded with
      ``LoadImage``); pass ``slice_dim=2`` for PyTorch's ``(B, C, D, H, W)``.

    Not differentiable: the result carries no gradient. Use :class:`CushionLayer` or :func:`bpda` to attack
    through it. Tensors on an accelerator are round-tripped through host memory (the codec is libjpeg on CPU).

    Args:
        x: float tensor in ``[0, 1]``.
        quality: JPEG quality in ``[1, 100]``.
        slice_dim: for 3-D volumes, the dim (2, 3, 4 or -3, -2, -1) along which they are cut into 2-D slices.
        backend: ``"auto"`` (torchvision's libjpeg-turbo kernels, falling back to Pillow), ``"torchvision"`` or
            ``"pillow"``.
        num_workers: threads for the codec; defaults to ``torch.get_num_threads()``.

    Returns:
        a tensor with the shape, dtype and device of ``x``, on the 8-bit grid.

    Raises:
        ValueError: for a wrong rank, an empty batch, a non-float dtype, NaN/Inf, values outside ``[0, 1]`` or a
            quality outside ``[1, 100]``.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`.
        - Output: same as input.
    """
    _check_input(x, scan_values=False)  # the values are checked frame by frame below
    quality = _check_int(quality, "quality", 1, 100)
    slice_dim = _check_slice_dim(slice_dim)
    roundtrip = _codec(backend)
    work_dtype = _compute_dtype(x.dtype)
    moved = x.ndim == 5 and slice_dim != 2
    xs = x.detach().movedim(slice_dim, 2) if moved else x.detach()
    src = xs.to(device="cpu", dtype=work_dtype)
    out = torch.empty(src.shape, dtype=work_dtype)
    pairs = _frame_pairs(src, out)
    workers = torch.get_num_threads() if num_workers is None else _check_int(num_workers, "num_workers", 1, 1024)
    workers = min(workers, len(pairs))
    if workers <= 1:
        in_range = _jpeg_frames(pairs, quality, roundtrip)
    else:
        chunks = [pairs[i::workers] for i in range(workers)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cushion-jpeg") as pool:
            in_range = all(list(pool.map(lambda chunk: _jpeg_frames(chunk, quality, roundtrip), chunks)))
    if not in_range:
        check_image_batch(x, "x", spatial_dims=(2, 3), value_range=(0.0, 1.0))  # raises the precise error
        raise ValueError("x values must lie in [0, 1] and be finite.")  # not reached: kept as a safety net
    if moved:
        out = out.movedim(2, slice_dim).contiguous()
    return out.to(device=x.device, dtype=x.dtype)


class _KorniaJpegProxy:
    """kornia's differentiable JPEG (a smooth surrogate), applied with the frame layout of :func:`jpeg_compress`.

    Grayscale frames are coded as grey RGB images and read back as the channel mean. A class rather than a closure,
    so that a model holding it can be pickled.
    """

    __name__ = "kornia_jpeg"

    def __init__(self, quality: int, slice_dim: int = -1) -> None:
        _, has_kornia = optional_import("kornia.enhance", name="jpeg_codec_differentiable")
        if not has_kornia:
            raise ImportError(
                "proxy='smooth' for JPEG uses kornia.enhance.jpeg_codec_differentiable: `pip install kornia`, "
                "or use proxy='identity' (BPDA with the identity) or a callable."
            )
        self.quality = quality
        self.slice_dim = _check_slice_dim(slice_dim)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5 and self.slice_dim != 2:
            return self._frames(x.movedim(self.slice_dim, 2)).movedim(2, self.slice_dim)
        return self._frames(x)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        jpeg_diff, _ = optional_import("kornia.enhance", name="jpeg_codec_differentiable")
        b, c = x.shape[:2]
        if c not in (1, 3):
            frames = x.reshape(-1, 1, *x.shape[-2:])
        elif x.ndim == 5:
            frames = x.transpose(1, 2).reshape(-1, c, *x.shape[-2:])
        else:
            frames = x
        q = torch.tensor([float(self.quality)], dtype=frames.dtype, device=frames.device)
        if frames.shape[1] == 1:
            out = jpeg_diff(frames.expand(-1, 3, -1, -1), q).mean(dim=1, keepdim=True)
        else:
            out = jpeg_diff(frames, q)
        if c not in (1, 3):
            return out.reshape(x.shape)
        if x.ndim == 5:
            return out.reshape(b, x.shape[2], c, *x.shape[-2:]).transpose(1, 2)
        return out


# ---------------------------------------------------------------------------------------------------------------
# bit depth
# ---------------------------------------------------------------------------------------------------------------


def reduce_bit_depth(x: torch.Tensor, bits: int = 5) -> torch.Tensor:
    """Keep the ``bits`` most significant bits of every 8-bit level (drop the ``8 - bits`` least significant).

    ``x`` is quantised to the 8-bit grid, ``v = round(255 x)``, the low bits are cleared,
    ``v' = (v >> (8 - bits)) << (8 - bits)``, and ``v' / 255`` is returned, exactly (the float arithmetic only
    involves integers and powers of two before the final division). ``bits=5`` and ``bits=4`` are the paper's
    "drop 3 / drop 4 bits"; ``bits=8`` is plain 8-bit quantisation.

    Its gradient is zero almost everywhere; use :class:`CushionLayer` or :func:`bpda` to attack through it.

    Args:
        x: float tensor in ``[0, 1]``.
        bits: bits kept, in ``[1, 8]``.

    Returns:
        a tensor like ``x`` on the grid ``k * 2**(8 - bits) / 255``.

    Raises:
        ValueError: for bad input (see :func:`jpeg_compress`) or ``bits`` outside ``[1, 8]``.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`.
        - Output: same as input.
    """
    _check_input(x)
    bits = _check_int(bits, "bits", 1, 8)
    step = float(2 ** (8 - bits))
    xc = x.to(_compute_dtype(x.dtype))
    levels = torch.round(xc * 255).clamp_(0, 255)
    return levels.div_(step).floor_().mul_(step).div_(255).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# total-variation minimisation
# ---------------------------------------------------------------------------------------------------------------


def _safe_norm(sq: torch.Tensor) -> torch.Tensor:
    """``sqrt(sq)`` with the same values, and a finite (zero) gradient where ``sq == 0``."""
    zero = sq == 0
    return torch.where(zero, torch.zeros_like(sq), torch.sqrt(torch.where(zero, torch.ones_like(sq), sq)))


def _forward_diff(u: torch.Tensor, dim: int) -> torch.Tensor:
    """Forward difference along ``dim`` with a zero last slice (Neumann boundary), same shape as ``u``."""
    return torch.cat([torch.diff(u, dim=dim), torch.zeros_like(u.narrow(dim, 0, 1))], dim=dim)


def _chambolle(img: torch.Tensor, weight: float, eps: float, max_iter: int) -> torch.Tensor:
    """Chambolle's projection algorithm on ``(N, *spatial)``, each of the N images independently.

    Follows ``skimage.restoration._denoise._denoise_tv_chambolle_nd`` step by step, including its stopping rule
    ``|E_prev - E| < eps * E_0`` evaluated per image: an image stops at the iteration skimage would stop at, and
    the batch runs until its last image has stopped. Differentiable (autograd through the unrolled iterations).
    """
    n = img.shape[0]
    spatial = img.shape[1:]
    nd = len(spatial)
    sdims = tuple(range(1, nd + 1))
    bshape = (n,) + (1,) * nd
    tau = 1.0 / (2.0 * nd)
    size = float(math.prod(spatial))
    p = img.new_zeros((nd,) + tuple(img.shape))
    d = torch.zeros_like(img)
    out = img
    result = img
    active = torch.ones(n, dtype=torch.bool, device=img.device)
    e_init = e_prev = None
    for i in range(max_iter):
        if i > 0:
            d = -p.sum(0)  # d is the (negative) divergence of p
            for ax in range(nd):
                dim = ax + 1
                length = img.shape[dim]
                if length > 1:
                    d.narrow(dim, 1, length - 1).add_(p[ax].narrow(dim, 0, length - 1))
            out = img + d
        energy = (d * d).sum(sdims)
        g = torch.stack([_forward_diff(out, ax + 1) for ax in range(nd)])
        norm = _safe_norm((g * g).sum(0))
        energy = energy + weight * norm.sum(sdims)
        norm = norm * (tau / weight) + 1.0
        p = (p - tau * g) / norm
        energy = energy / size
        if i == 0:
            e_init = e_prev = energy
            continue
        newly = active & ((e_prev - energy).abs() < eps * e_init)
        if bool(newly.any()):
            result = torch.where(newly.view(bshape), out, result)
            active = active & ~newly
            if not bool(active.any()):
                return result
        e_prev = energy
    return torch.where(active.view(bshape), out, result)


def tv_minimize(
    x: torch.Tensor,
    weight: float = _DEFAULT_TV_WEIGHT,
    eps: float = _DEFAULT_TV_EPS,
    max_iter: int = _DEFAULT_TV_MAX_ITER,
) -> torch.Tensor:
    """Total-variation minimisation (ROF denoising) with Chambolle's projection algorithm, batched.

    Solves :math:`\\min_u \\mathrm{TV}(u) + \\frac{1}{2\\,\\mathrm{weight}} \\|u - x\\|^2` for every image and
    channel independently, 2-D or 3-D (isotropic TV over all spatial axes). Matches
    ``skimage.restoration.denoise_tv_chambolle(image, weight, eps, max_num_iter, channel_axis=...)`` per channel,
    including its stopping rule. Differentiable: autograd runs through the unrolled iterations, which is the
    smooth BPDA surrogate ``CushionLayer(method="tvm", proxy="smooth")`` uses. (Guo et al.'s TVM also drops
    random pixels before the reconstruction; this implementation has no dropout, so it is deterministic.)

    Args:
        x: float tensor in ``[0, 1]``.
        weight: denoising weight (larger is smoother), ``> 0``.
        eps: relative energy change that stops the iterations, ``>= 0`` (0 runs exactly ``max_iter`` iterations).
        max_iter: maximal number of iterations, ``>= 1``.

    Returns:
        the denoised tensor, same shape and dtype as ``x`` (half precision is computed in float32).

    Raises:
        ValueError: for bad input (see :func:`jpeg_compress`) or bad parameters.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`.
        - Output: same as input.
    """
    _check_input(x)
    weight = check_positive(weight, "weight")
    eps = check_positive(eps, "eps", allow_zero=True)
    max_iter = _check_int(max_iter, "max_iter", 1, 1_000_000)
    xc = x.to(_compute_dtype(x.dtype))
    out = _chambolle(xc.reshape(-1, *x.shape[2:]), weight, eps, max_iter)
    return out.reshape(x.shape).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# BPDA
# ---------------------------------------------------------------------------------------------------------------


class _BPDA(torch.autograd.Function):
    """Value of ``forward_fn``, gradient of ``proxy`` (identity when ``proxy`` is None)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward_fn: Callable, proxy: Callable | None) -> torch.Tensor:
        y = forward_fn(x)
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"bpda: forward_fn must return a tensor of the input shape {tuple(x.shape)}, got {got}.")
        ctx.proxy = proxy
        if proxy is not None:
            ctx.save_for_backward(x)
        if y is x or y.data_ptr() == x.data_ptr():
            y = y.clone()  # an output must not alias the input of a custom autograd function
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if ctx.proxy is None:
            return grad, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            yp = ctx.proxy(xd)
        if not isinstance(yp, torch.Tensor) or yp.shape != grad.shape:
            got = tuple(yp.shape) if isinstance(yp, torch.Tensor) else type(yp).__name__
            raise ValueError(f"bpda: proxy must return a tensor of shape {tuple(grad.shape)}, got {got}.")
        if not yp.requires_grad:
            return torch.zeros_like(x), None, None
        (gx,) = torch.autograd.grad(yp, xd, grad, allow_unused=True)
        return (torch.zeros_like(x) if gx is None else gx), None, None


def bpda(
    x: torch.Tensor,
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    proxy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Backward Pass Differentiable Approximation (Athalye et al., 2018).

    The value is exactly ``forward_fn(x)`` (computed without autograd); the backward pass returns the
    vector-Jacobian product of ``proxy`` at ``x`` instead, i.e. ``grad_out`` itself for the identity proxy.
    A non-identity proxy is re-evaluated on ``x`` during the backward pass. Second-order gradients are not
    supported.

    Args:
        x: input tensor.
        forward_fn: the (possibly non-differentiable) transform; must return a tensor of the shape of ``x``.
        proxy: differentiable surrogate of ``forward_fn`` with the same output shape, or ``None`` for identity.

    Returns:
        ``forward_fn(x)``, differentiable with respect to ``x`` through ``proxy``.
    """
    return _BPDA.apply(x, forward_fn, proxy)


# ---------------------------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------------------------


class CushionLayer(nn.Module):
    """The cushion as an ``nn.Module``: true transform in the forward pass, BPDA proxy in the backward pass.

    Put it first inside the protected model (``nn.Sequential(CushionLayer("jpeg"), classifier)``) so that
    training and in-engine attacks both see it; an attacker's gradient flows through the proxy.

    Args:
        method: ``"jpeg"``, ``"bit_depth"``, ``"tvm"``, ``"identity"`` or a callable
            ``(B, C, *spatial) -> same shape`` (its value is computed without autograd and BPDA applies).
        quality: JPEG quality in ``[1, 100]`` (``method="jpeg"``).
        bits: bits kept out of 8 (``method="bit_depth"``); 5 drops 3 bits, 4 drops 4.
        tv_weight: TVM denoising weight (``method="tvm"``).
        tv_eps: TVM stopping tolerance.
        tv_max_iter: TVM maximal iterations.
        proxy: gradient proxy. ``"identity"`` (default; straight-through BPDA), ``"smooth"`` (the method's smooth
            surrogate: the unrolled Chambolle iterations for TVM, whose value is the cushion itself; kornia's
            differentiable JPEG for JPEG, needs ``kornia``; none exists for bit depth), or a callable.
        name: display name; defaults to a preset-style name such as ``"jpeg80"`` or ``"bit_depth5"``.
        num_workers: JPEG codec threads (default ``torch.get_num_threads()``).
        slice_dim: JPEG on 3-D volumes: the dim cut into 2-D slices (default -1, MONAI's ``(B, C, H, W, D)``).

    Raises:
        ValueError: for an unknown method/proxy or out-of-range parameters.
        ImportError: for ``proxy="smooth"`` with JPEG when kornia is not installed.

    Shape:
        - Input: :math:`(B, C, H, W)` or :math:`(B, C, D, H, W)`, float in ``[0, 1]``.
        - Output: same as input.
    """

    def __init__(
        self,
        method: str | Callable[[torch.Tensor], torch.Tensor] = "jpeg",
        quality: int = 80,
        bits: int = 5,
        tv_weight: float = _DEFAULT_TV_WEIGHT,
        tv_eps: float = _DEFAULT_TV_EPS,
        tv_max_iter: int = _DEFAULT_TV_MAX_ITER,
        proxy: ProxyType = "identity",
        name: str | None = None,
        num_workers: int | None = None,
        slice_dim: int = -1,
    ) -> None:
        super().__init__()
        if callable(method):
            self.method: str = "callable"
            self._fn: Callable[[torch.Tensor], torch.Tensor] = method
            default_name = getattr(method, "__name__", type(method).__name__)
        else:
            self.method = look_up_option(method, CUSHION_METHODS)
            if self.method == "jpeg":
                self.quality = _check_int(quality, "quality", 1, 100)
                self.slice_dim = _check_slice_dim(slice_dim)
                self._fn = functools.partial(
                    jpeg_compress, quality=self.quality, slice_dim=self.slice_dim, num_workers=num_workers
                )
                default_name = f"jpeg{self.quality}"
            elif self.method == "bit_depth":
                self.bits = _check_int(bits, "bits", 1, 8)
                self._fn = functools.partial(reduce_bit_depth, bits=self.bits)
                default_name = f"bit_depth{self.bits}"
            elif self.method == "tvm":
                self.tv_weight = check_positive(tv_weight, "tv_weight")
                self.tv_eps = check_positive(tv_eps, "tv_eps", allow_zero=True)
                self.tv_max_iter = _check_int(tv_max_iter, "tv_max_iter", 1, 1_000_000)
                self._fn = functools.partial(
                    tv_minimize, weight=self.tv_weight, eps=self.tv_eps, max_iter=self.tv_max_iter
                )
                default_name = "tvm" if self.tv_weight == _DEFAULT_TV_WEIGHT else f"tvm{self.tv_weight:g}"
            else:
                self._fn = _identity
                default_name = "identity"
        self.name: str = default_name if name is None else str(name)
        self.proxy_name, self._proxy, self._unrolled = self._resolve_proxy(proxy)

    def _resolve_proxy(self, proxy: ProxyType) -> tuple[str, Callable | None, bool]:
        """Return ``(display name, proxy callable or None for identity, True to differentiate the value itself)``."""
        if callable(proxy):
            return getattr(proxy, "__name__", type(proxy).__name__), proxy, False
        if proxy is None:
            return "identity", None, False
        mode = look_up_option(proxy, ("identity", "smooth"))
        if mode == "identity" or self.method == "identity":
            return "identity", None, False
        if self.method == "tvm":
            return "smooth", None, True
        if self.method == "jpeg":
            return "smooth", _KorniaJpegProxy(self.quality, self.slice_dim), False
        raise ValueError(
            f"No smooth surrogate exists for cushion method {self.method!r}; use proxy='identity' or a callable."
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the cushioned batch; gradients with respect to ``x`` follow the proxy."""
        if self.method == "identity":
            _check_input(x)
            return x
        if self.method == "callable":
            _check_input(x)
        if self._unrolled or not (torch.is_grad_enabled() and x.requires_grad):
            return self._fn(x)
        return bpda(x, self._fn, self._proxy)

    def get_config(self) -> dict[str, Any]:
        """Plain-Python constructor arguments that rebuild this cushion with :func:`cushion_from_config`.

        Raises:
            ValueError: for a user callable method or proxy (code cannot be stored as configuration).
        """
        if self.method == "callable" or self.proxy_name not in ("identity", "smooth"):
            raise ValueError(
                f"cushion {self.name!r} uses a user callable (method or proxy) and cannot be stored as a config; "
                "save it separately."
            )
        config: dict[str, Any] = {"method": self.method, "proxy": self.proxy_name, "name": self.name}
        if self.method == "jpeg":
            config.update(quality=self.quality, slice_dim=self.slice_dim)
        elif self.method == "bit_depth":
            config["bits"] = self.bits
        elif self.method == "tvm":
            config.update(tv_weight=self.tv_weight, tv_eps=self.tv_eps, tv_max_iter=self.tv_max_iter)
        return config

    def extra_repr(self) -> str:
        parts = [f"name={self.name!r}", f"method={self.method!r}"]
        if self.method == "jpeg":
            parts.append(f"quality={self.quality}")
        elif self.method == "bit_depth":
            parts.append(f"bits={self.bits}")
        elif self.method == "tvm":
            parts += [f"tv_weight={self.tv_weight:g}", f"tv_eps={self.tv_eps:g}", f"tv_max_iter={self.tv_max_iter}"]
        if self.method != "identity":
            parts.append(f"proxy={self.proxy_name!r}")
        return ", ".join(parts)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def cushion_from_config(config: Mapping[str, Any]) -> CushionLayer:
    """Rebuild a :class:`CushionLayer` from :meth:`CushionLayer.get_config` output."""
    if not isinstance(config, Mapping) or "method" not in config:
        raise ValueError(f"a cushion config must be a mapping with a 'method' key, got {config!r}.")
    return CushionLayer(**dict(config))


def cushion_from_name(name: str, **overrides: Any) -> CushionLayer:
    """Build a :class:`CushionLayer` from a preset name (``"jpeg80"``, ``"bit_depth4"``, ``"tvm"``, ...) or a
    method name (``"jpeg"`` with its defaults); keyword ``overrides`` replace preset values (e.g. ``proxy``).

    Raises:
        ValueError: for an unknown name (the message lists the options).
    """
    options = {**{m: {"method": m} for m in CUSHION_METHODS}, **CUSHION_PRESETS}
    config = dict(look_up_option(str(name).lower(), options))
    config.update(overrides)
    return CushionLayer(**config)


def resolve_cushion(cushion: str | nn.Module | Callable[[torch.Tensor], torch.Tensor] | None,
                    **kwargs: Any) -> nn.Module | None:
    """The one conversion of a Cushion setting into a layer, used wherever a Cushion is given by the user.

    Args:
        cushion: ``None`` or ``"none"`` (no Cushion); a preset or method name (``"jpeg80"``, ``"tvm"``, ``"jpeg"``,
            ... -- :func:`cushion_from_name`); an ``nn.Module`` (a :class:`CushionLayer`, or any module with the
            same contract: ``(B, C, *spatial)`` in ``[0, 1]`` -> same), returned as is; or another callable, wrapped
            in ``CushionLayer(method=callable)``.
        kwargs: layer options (``quality``, ``proxy``, ...), with a name or a callable only.

    Raises:
        ValueError: for an unknown name, options with a module or ``None``, or another type.
    """
    if cushion is None or (isinstance(cushion, str) and cushion.lower() == "none"):
        if kwargs:
            raise ValueError(f"Options {sorted(kwargs)} given without a Cushion.")
        return None
    if isinstance(cushion, str):
        return cushion_from_name(cushion, **kwargs)
    if isinstance(cushion, nn.Module):
        if kwargs:
            raise ValueError(f"Options {sorted(kwargs)} cannot be applied to an existing {type(cushion).__name__}.")
        return cushion
    if callable(cushion):
        return CushionLayer(method=cushion, **kwargs)
    raise ValueError(f"cushion must be None, a preset name, a module or a callable, got {type(cushion).__name__}.")
