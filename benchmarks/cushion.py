"""JPEG-80 cushion throughput: our CushionLayer vs a Pillow per-image loop, ART's JpegCompression and the bare codec.

Run from the repository root::

    PYTHONPATH=. python benchmarks/cushion.py [--batch 64] [--size 224] [--repeats 7] [--threads 2]

All candidates round-trip the same batch of RGB float images in [0, 1] (B, 3, H, W); the table reports the
median images/s over ``--repeats`` runs (after one warm-up) and the ratio to the Pillow loop, measured in one run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from monai.utils import optional_import

from monai_aegis.networks.layers import CushionLayer

Image, has_pil = optional_import("PIL.Image")
art_jpeg, has_art = optional_import("art.defences.preprocessor", name="JpegCompression")
tv_io, has_tv = optional_import("torchvision.io")


def pillow_loop(x: torch.Tensor, quality: int) -> torch.Tensor:
    """What a user writes by hand: float -> uint8 -> Pillow save -> load -> float, one image at a time."""
    out = []
    for img in x.numpy():
        levels = np.clip(np.rint(img.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(levels).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(np.asarray(Image.open(buf)).transpose(2, 0, 1).astype(np.float32) / 255)
    return torch.from_numpy(np.stack(out))


def images_per_second(candidates: dict[str, Callable[[], object]], n_images: int, repeats: int) -> dict[str, float]:
    """Median images/s of every candidate; repeats are interleaved so that all see the same machine load."""
    for fn in candidates.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: n_images / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates its image I/O

    gen = torch.Generator().manual_seed(0)
    # natural-image-like content: smooth structure plus fine texture (pure noise would flatter no one)
    x = torch.nn.functional.avg_pool2d(torch.rand(args.batch, 3, args.size, args.size, generator=gen), 5, 1, 2)
    q = args.quality
    layer = CushionLayer("jpeg", quality=q)

    layer_1 = CushionLayer("jpeg", quality=q, num_workers=1)
    candidates: dict[str, Callable[[], object]] = {
        f"monai_aegis CushionLayer (float in/out, {args.threads} worker threads)": lambda: layer(x),
        "monai_aegis CushionLayer (float in/out, 1 worker thread)": lambda: layer_1(x),
        "Pillow per-image loop (float in/out)": lambda: pillow_loop(x, q),
    }
    if has_art:
        art = art_jpeg(clip_values=(0.0, 1.0), quality=q, channels_first=True, apply_predict=True)
        xn = x.numpy()
        candidates["ART JpegCompression (float in/out)"] = lambda: art(xn)
    if has_tv:
        # CHW views of HWC memory, so that the encoder's internal HWC copy is a no-op: the codec's own cost
        u8 = list(x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2))
        candidates["torchvision codec alone (uint8 in/out, reference)"] = lambda: tv_io.decode_jpeg(
            tv_io.encode_jpeg(u8, quality=q)
        )
    rates = images_per_second(candidates, args.batch, args.repeats)
    pil_rate = rates["Pillow per-image loop (float in/out)"]

    # sanity: ours equals the Pillow loop within one grey level
    diff = float((layer(x) - pillow_loop(x, q)).abs().max()) * 255
    print(
        f"JPEG-{q} round trip, batch {args.batch} x 3 x {args.size} x {args.size}, {args.threads} threads, "
        f"median of {args.repeats}; max |ours - Pillow| = {diff:.2f} grey levels\n"
    )
    art_rate = rates.get("ART JpegCompression (float in/out)")
    print("| implementation | img/s | vs Pillow loop | vs ART |")
    print("| --- | ---: | ---: | ---: |")
    for name, rate in rates.items():
        vs_art = f"{rate / art_rate:.2f}x" if art_rate else "n/a"
        print(f"| {name} | {rate:,.0f} | {rate / pil_rate:.2f}x | {vs_art} |")


if __name__ == "__main__":
    main()
