# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""``python -m monai_aegis demo``: apply every Cushion preset to the embedded chest X-ray sample and report what
it did (intensity change, PSNR, high-frequency energy, what survives of a small perturbation, throughput)."""

from __future__ import annotations

import argparse
import time

import torch

__all__ = ["LEGEND", "add_parser", "high_frequency_fraction", "run"]

#: budget of the random-sign stand-in for an adversarial perturbation
DEMO_EPS = 4 / 256

#: what each column of the table measures (printed with it)
LEGEND = f"""columns (C = the cushion, x = a clean image, d = a random +-{DEMO_EPS * 256:.0f}/256 sign perturbation, a
stand-in for an adversarial one):
  mean abs change         mean |C(x) - x| on the clean images (intensities in [0, 1])
  PSNR (dB)               of C(x) against x: how much the cushion alters a clean image
  high-freq. energy kept  spectral energy above 1/4 of Nyquist in C(x) relative to x: below 1 the cushion smooths,
                          above 1 it adds sharp detail of its own (e.g. bit-depth reduction's quantisation steps)
  perturbation kept       ||C(x + d) - C(x)|| / ||d||: below 1 the cushion shrinks the perturbation, above 1 its
                          own rounding adds to it. Bit-depth reduction is no filter: it leaves most pixels on their
                          level and moves the others by a whole level (bit_depth4: a 4/256 change crosses one of
                          the 16/256 levels on about 1/4 of the pixels, so the L2 ratio is about sqrt(16/4) = 2)
  pixels moved            share of pixels where C(x + d) differs from C(x) (the perturbation itself moves all)
  img/s                   throughput of the cushion on this batch (CPU)"""


def high_frequency_fraction(x: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """Fraction of each image's spectral energy (mean removed) above ``cutoff`` x Nyquist, per image ``(B,)``."""
    spec = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs().pow(2).sum(1)
    fy = torch.fft.fftfreq(x.shape[-2]).abs().view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1]).abs().view(1, -1)
    high = (torch.maximum(fy, fx) > cutoff * 0.5).to(spec)
    return (spec * high).sum((-2, -1)) / spec.sum((-2, -1)).clamp_min(1e-12)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="apply each Cushion preset to the embedded sample and print what it did")
    p.add_argument("--split", default="test", help="embedded sample split (train/val/test)")
    p.add_argument("--size", type=int, default=128, help="image size")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import load_sample_arrays
    from ..networks import CUSHION_PRESETS, cushion_from_name

    x, y = load_sample_arrays(args.split, args.size)
    print(f"embedded Kermany chest X-ray sample, split '{args.split}': {x.shape[0]} images "
          f"({int((y == 0).sum())} NORMAL, {int((y == 1).sum())} PNEUMONIA), {args.size}x{args.size}, values in [0, 1]")
    hf0 = high_frequency_fraction(x).mean()
    # a random-sign perturbation stands in for an adversarial one: how much of it survives each cushion?
    g = torch.Generator().manual_seed(0)
    noise = (torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1) * DEMO_EPS
    xn = (x + noise).clamp(0, 1)
    print(f"high-frequency energy fraction of the clean images: {hf0:.4f}\n")
    print(LEGEND + "\n")
    print("| cushion | mean abs change | PSNR (dB) | high-freq. energy kept | perturbation kept | pixels moved "
          "| img/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in CUSHION_PRESETS:
        layer = cushion_from_name(name)
        t0 = time.perf_counter()
        with torch.no_grad():
            c = layer(x)
        dt = time.perf_counter() - t0
        with torch.no_grad():
            cn = layer(xn)
        mse = (c - x).pow(2).mean()
        psnr = float("inf") if mse == 0 else float(10 * torch.log10(1 / mse))
        kept = float(high_frequency_fraction(c).mean() / hf0)
        pert = float((cn - c).norm() / (xn - x).norm())
        moved = float(((cn - c).abs() > 1e-6).float().mean())
        print(f"| {name} | {float((c - x).abs().mean()):.4f} | {psnr:.1f} | {kept:.3f} | {pert:.3f} | {moved:.3f} | "
              f"{x.shape[0] / max(dt, 1e-9):,.0f} |")
    print("\nNone of these alone stops an attacker who knows the cushion (BPDA crosses it); its job is to make the "
          "Shield's task easier.\nAdd a cushion to a MONAI pipeline with "
          "monai_aegis.transforms.Cushiond(keys='image', cushion='jpeg80'),"
          "\nor put monai_aegis.networks.CushionLayer('jpeg', quality=80) first inside the model.")
    return 0
