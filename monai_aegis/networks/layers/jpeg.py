# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""JPEG re-coding of ``(B, C, *spatial)`` batches in [0, 1] with real libjpeg (torchvision's kernels, Pillow as a
fallback) across worker threads, and kornia's differentiable JPEG as the smooth BPDA proxy."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from monai.utils import look_up_option, optional_import

from ...utils import check_image_batch
from .cushion_checks import (
    _RANGE_ATOL,
    _check_input,
    _check_int,
    _check_slice_dim,
    _compute_dtype,
)

__all__ = ["jpeg_compress"]


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
