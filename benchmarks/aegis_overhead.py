"""Overhead of the Medical Aegis defence, measured as ratios within one run.

1. Inference: ``AegisWrapper.screen`` (JPEG-80 Cushion + feature hooks + Shield) vs the bare classifier, torchvision
   ResNet-50 (2 classes, random init, eval mode), batch 8, 3 x 224 x 224, CPU.
2. Shield training: wall time of one ``ShieldTrainer`` iteration (``k``-step training attackers) as a multiple of
   one classifier forward + backward on the same batch, for the paper's feature Shield on ResNet-18 and for the
   ``aegis_cxr`` bundle default (``small_vgg`` at 64 px, image-reading Shield with either input stem, with and
   without persistent starts). The floor is ``k + 1`` (k attack steps plus the forward of the clean and
   adversarial images, whose cost is about one forward + backward).

Run: ``python benchmarks/aegis_overhead.py`` (``PYTHONPATH=.`` from a source checkout without installing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from monai_aegis.engines import ShieldAdversary, ShieldTrainer
from monai_aegis.networks import AegisWrapper, Shield, build_aegis, cushion_from_name
from monai_aegis.networks.nets import small_vgg
from monai_aegis.utils import tensor_loader


def _median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def inference_overhead(repeats: int) -> list[tuple[str, float, float, float]]:
    torch.manual_seed(0)
    clf = torchvision.models.resnet50(num_classes=2).eval()
    cushion = cushion_from_name("jpeg80")
    shield = Shield.from_classifier(clf, "resnet50", (3, 224, 224), 2, preprocess=cushion).eval()
    wrapper = AegisWrapper(clf, shield, cushion=cushion, threshold=0.0).eval()
    x = torch.rand(8, 3, 224, 224)
    rows = []
    with torch.no_grad():
        candidates = {
            "bare classifier": lambda: clf(x),
            "Cushion (JPEG-80) alone": lambda: cushion(x),
            "AegisWrapper.forward (Cushion + classifier)": lambda: wrapper(x),
            "AegisWrapper.screen (Cushion + hooks + Shield)": lambda: wrapper.screen(x),
        }
        # interleave repeats so that load changes hit every candidate alike
        samples: dict[str, list[float]] = {k: [] for k in candidates}
        for fn in candidates.values():
            fn()
        for _ in range(repeats):
            for k, fn in candidates.items():
                t0 = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
    for k, s in samples.items():
        rows.append((k, statistics.median(s), min(s), max(s)))
    return rows


def _iteration_times(trainer: ShieldTrainer) -> list[float]:
    """Run ``trainer`` and return the wall time of each iteration."""
    from ignite.engine import Events

    times: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: times.append(-time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda e: times.__setitem__(-1, times[-1] + time.perf_counter()))
    trainer.run()
    return times


def training_cost(setting: str, steps: int, repeats: int, size: int, batch: int, input_stem: str = "strided",
                  persistent_starts: bool = False) -> dict[str, float]:
    """One Shield training iteration in units of one classifier forward + backward (input gradient) on the same
    batch. ``setting``: ``"resnet18"`` (the paper's feature Shield on torchvision ResNet-18, the paper's training
    attacker: PGD on ``S_t``) or ``"small_vgg"`` (the ``aegis_cxr`` bundle default: image-reading Shield, PGD + WB
    training attackers, 1 x ``size``^2)."""
    torch.manual_seed(0)
    cushion = cushion_from_name("jpeg80")
    if setting == "resnet18":
        clf = torchvision.models.resnet18(num_classes=2).eval()
        shape, attacks = (3, size, size), "shield_pgd"
        shield = Shield.from_classifier(clf, "resnet18", shape, 2, preprocess=cushion)
        wrapper = AegisWrapper(clf, shield, cushion=cushion)
    else:
        clf = small_vgg(in_channels=1, num_classes=2, width=32, convs_per_block=2).eval()
        shape, attacks = (1, size, size), ["pgd", "wb"]
        wrapper = build_aegis(clf, shape, 2, None, cushion, shield_width=32, shield_hidden=64,
                              shield_inputs="input", input_stem=input_stem, seed=0)
    x = torch.rand(4 * batch, *shape)  # four batches an epoch
    y = torch.arange(4 * batch) % 2

    def fwd_bwd() -> None:
        xg = x[:batch].clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(clf(xg), y[:batch]), xg)

    t_fb, _, _ = _median_time(fwd_bwd, repeats)
    # persistent starts: one pass over the data per epoch, so every iteration after the first epoch starts from the
    # previous epoch's perturbation of its images
    loader = tensor_loader(x, y, batch_size=batch)
    trainer = ShieldTrainer("cpu", 1 + max(1, repeats // 4), loader, wrapper,
                            torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
                            adversary=ShieldAdversary(wrapper, attacks=attacks, steps=steps), stats_batches=0,
                            persistent_starts=persistent_starts)
    t_it = statistics.median(_iteration_times(trainer)[4:])  # the first epoch is warm-up
    return {"fwd_bwd": t_fb, "iteration": t_it, "ratio": t_it / t_fb, "floor": steps + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="training attacker steps")
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--parts", default="inference,training", help="comma-separated: inference, training")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    if "inference" in parts:
        print_inference(args.repeats, args.threads, load)
    if "training" in parts:
        print_training(args)


def print_inference(repeats: int, threads: int, load: float) -> None:
    rows = inference_overhead(repeats)
    base = rows[0][1]
    print(f"## Inference overhead: torchvision ResNet-50 (2 classes), batch 8 x 3 x 224 x 224, CPU, "
          f"{threads} threads, median of {repeats} interleaved repeats, load average {load:.2f}\n")
    print("| path | s / batch (median) | min / max | vs bare classifier |")
    print("| --- | ---: | ---: | ---: |")
    for name, med, lo, hi in rows:
        print(f"| {name} | {med:.4f} | {lo:.4f} / {hi:.4f} | {med / base:.3f}x |")
    screen = rows[-1][1] / base
    print(f"\nTarget: screen <= 1.10x bare classifier -> {screen:.3f}x ({'met' if screen <= 1.10 else 'NOT met'})\n")


def print_training(args: argparse.Namespace) -> None:
    reps = max(3, args.repeats // 2)
    print(f"## Shield training cost in classifier forward + backward units (input gradient, same batch), "
          f"{args.steps}-step training attackers, JPEG-80 Cushion (BPDA), {args.threads} threads\n")
    print("| setting | training attackers | input stem | persistent starts | classifier fwd+bwd (s) | "
          "iteration (s) | units | floor (steps + 1) |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    runs = [("resnet18", args.train_size, args.train_batch, "-", False)]
    runs += [("small_vgg", 64, 32, stem, ps) for stem in ("pointwise", "strided") for ps in (False, True)]
    for setting, size, batch, stem, ps in runs:
        cost = training_cost(setting, args.steps, reps, size, batch, input_stem=stem if stem != "-" else "strided",
                             persistent_starts=ps)
        label = (f"ResNet-18, features Shield, {batch} x 3 x {size}^2" if setting == "resnet18"
                 else f"small_vgg, input Shield (bundle default), {batch} x 1 x {size}^2")
        attackers = "PGD on S_t" if setting == "resnet18" else "PGD + WB"
        print(f"| {label} | {attackers} | {stem} | {'yes' if ps else 'no'} | {cost['fwd_bwd']:.4f} | "
              f"{cost['iteration']:.4f} | {cost['ratio']:.2f} | {cost['floor']:.0f} |")
    print("\nThe floor counts the classifier only; the input Shield's own CNN adds its forward + backward at every "
          "attack step (WB) and on the doubled batch of the update.")


if __name__ == "__main__":
    main()
