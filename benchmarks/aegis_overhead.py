"""Overhead of the Medical Aegis defence, measured as ratios within one run.

1. Inference: ``AegisWrapper.screen`` (JPEG-80 Cushion + feature hooks + Shield) vs the bare classifier, torchvision
   ResNet-50 (2 classes, random init, eval mode), batch 8, 3 x 224 x 224, CPU.
2. Shield training: wall time of one ``ShieldTrainer`` iteration (``k``-step training attacker) as a multiple of
   one classifier forward + backward on the same batch. The floor is ``k + 1`` (k attack steps plus the forward of
   the clean and adversarial images, whose cost is about one forward + backward).

Run: ``python benchmarks/aegis_overhead.py`` (``PYTHONPATH=.`` from a source checkout without installing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from monai_aegis.engines import ShieldAdversary, ShieldTrainer
from monai_aegis.networks import AegisWrapper, Shield, cushion_from_name


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


def training_cost(steps: int, repeats: int, size: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    clf = torchvision.models.resnet18(num_classes=2).eval()
    cushion = cushion_from_name("jpeg80")
    shield = Shield.from_classifier(clf, "resnet18", (3, size, size), 2, preprocess=cushion)
    wrapper = AegisWrapper(clf, shield, cushion=cushion)
    x = torch.rand(batch, 3, size, size)
    y = torch.arange(batch) % 2

    def fwd_bwd() -> None:
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(clf(xg), y), xg)

    t_fb, _, _ = _median_time(fwd_bwd, repeats)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    trainer = ShieldTrainer("cpu", repeats + 1, loader, wrapper, torch.optim.Adam(shield.parameters(), 1e-3),
                            adversary=ShieldAdversary(wrapper, attacks="shield_pgd", steps=steps), stats_batches=0)
    times: list[float] = []

    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: times.append(-time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: times.__setitem__(-1, times[-1] + time.perf_counter()))
    trainer.run()
    t_it = statistics.median(times[1:])  # first iteration is warm-up
    return {"fwd_bwd": t_fb, "iteration": t_it, "ratio": t_it / t_fb, "floor": steps + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="training attacker steps")
    parser.add_argument("--train-size", type=int, default=128)
    parser.add_argument("--train-batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]

    rows = inference_overhead(args.repeats)
    base = rows[0][1]
    print(f"## Inference overhead: torchvision ResNet-50 (2 classes), batch 8 x 3 x 224 x 224, CPU, "
          f"{args.threads} threads, median of {args.repeats} interleaved repeats, load average {load:.2f}\n")
    print("| path | s / batch (median) | min / max | vs bare classifier |")
    print("| --- | ---: | ---: | ---: |")
    for name, med, lo, hi in rows:
        print(f"| {name} | {med:.4f} | {lo:.4f} / {hi:.4f} | {med / base:.3f}x |")
    screen = rows[-1][1] / base
    print(f"\nTarget: screen <= 1.10x bare classifier -> {screen:.3f}x ({'met' if screen <= 1.10 else 'NOT met'})\n")

    cost = training_cost(args.steps, max(3, args.repeats // 2), args.train_size, args.train_batch)
    print(f"## Shield training cost: torchvision ResNet-18 + JPEG-80 Cushion, batch {args.train_batch} x 3 x "
          f"{args.train_size}^2, training attacker {args.steps}-step PGD on S_t (BPDA)\n")
    print("| quantity | seconds | multiple of one classifier fwd+bwd |")
    print("| --- | ---: | ---: |")
    print(f"| classifier forward + backward (input grad) | {cost['fwd_bwd']:.4f} | 1.00 |")
    print(f"| one ShieldTrainer iteration | {cost['iteration']:.4f} | {cost['ratio']:.2f} |")
    print(f"| floor (steps + 1) | - | {cost['floor']:.2f} |")
    print(f"\nPer epoch of N images the Shield costs {cost['ratio']:.2f} classifier fwd+bwd per image "
          f"(floor {cost['floor']}).")


if __name__ == "__main__":
    main()
