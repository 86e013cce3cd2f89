"""Seconds per attack step: 20-step targeted PGD-Linf on torchvision ResNet-18 (2 classes, random init, eval mode),
batch (16, 3, 224, 224), CPU, 2 threads.

Compared: (a) the floor -- a minimal hand-written PGD loop, one forward + backward per step; (b) ours,
``monai_aegis.attacks.PGD``; (c) torchattacks ``PGD`` (targeted); (d) ART ``ProjectedGradientDescentPyTorch``
(targeted). Then the same through a JPEG-80 cushion differentiated with BPDA: ours with the project's
``CushionLayer`` when ``monai_aegis.networks.layers.cushion_from_name`` exists, else a straight-through JPEG
(torchvision.io encode/decode, identity backward, wrapped by ``monai_aegis.attacks.BPDAWrapper``), and ART with
its ``JpegCompression`` preprocessor (identity gradient estimate). The cushion's own cost (forward + backward of
the cushion alone on the batch) is measured too.

Ours runs the attack on a channels-last copy of a float32 CPU batch (``memory_format="auto"``, after checking the
model gives the same logits that way); rows (a') and (b') show the floor with that layout and ours without it.

Each method runs once to warm up, then ``--repeats`` times interleaved with the others (to spread machine-load
drift evenly); per-step time = wall time of one attack call / its step count, median over repeats. Every method runs
the same number of steps by default: on a shared VM, 10-step calls measured ~10 % faster *per step* than 20-step
calls (the floor included), which biased a comparison at unequal lengths. ``--lib-steps`` shortens the library runs.

    python benchmarks/attacks.py [--steps 20] [--lib-steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's monai_aegis

EPS, ALPHA = 16 / 256, 2 / 256


class StraightThroughJpeg(nn.Module):
    """Real JPEG (libjpeg via torchvision.io) on 8-bit quantised images, batched."""

    def __init__(self, quality: int = 80) -> None:
        super().__init__()
        self.quality = quality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.io import decode_jpeg, encode_jpeg

        u8 = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
        out = torch.stack(decode_jpeg(encode_jpeg(list(u8), quality=self.quality)))
        return out.to(device=x.device, dtype=x.dtype) / 255


def make_cushion() -> tuple[nn.Module, str]:
    from monai_aegis.attacks import BPDAWrapper

    try:
        from monai_aegis.networks.layers import cushion_from_name  # the project's CushionLayer, once merged

        return cushion_from_name("jpeg80"), "CushionLayer jpeg80 (project)"
    except ImportError:
        return BPDAWrapper(StraightThroughJpeg(80)), "straight-through JPEG-80 (torchvision.io + BPDAWrapper)"


def floor_pgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int, pre: nn.Module | None = None):
    """The minimal targeted PGD loop: random start, then per step one forward + backward, sign step, clamp."""
    lo, hi = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
    xa = torch.clamp(x + torch.empty_like(x).uniform_(-EPS, EPS), lo, hi)
    for _ in range(steps):
        xa.requires_grad_(True)
        z = pre(xa) if pre is not None else xa
        loss = F.cross_entropy(model(z), target)
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.clamp(xa.detach() - ALPHA * g.sign(), lo, hi)
    return xa


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lib-steps", type=int, default=None,
                    help="steps per call for torchattacks, ART and the short reference rows (default: --steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    if args.lib_steps is None:
        args.lib_steps = args.steps

    torch.set_num_threads(2)
    torch.manual_seed(0)
    import torchvision

    from monai_aegis.attacks import PGD

    model = torchvision.models.resnet18(num_classes=2).eval()
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.zeros(args.batch, dtype=torch.long)
    target = torch.ones_like(y)
    cushion, cushion_name = make_cushion()

    runs: dict[str, tuple[int, Callable[[int], object]]] = {}
    runs["(a) floor: minimal loop"] = (args.steps, lambda n: floor_pgd(model, x, target, n))
    runs["(b) ours: monai_aegis PGD"] = (
        args.steps, lambda n: PGD(model, eps=EPS, steps=n, step_size=ALPHA)(x, y, target))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runs["(a') floor, channels-last input (ours' default layout on CPU)"] = (
        args.lib_steps, lambda n: floor_pgd(model, x_cl, target, n))
    runs["(b') ours, memory_format='preserve'"] = (
        args.steps, lambda n: PGD(model, eps=EPS, steps=n, step_size=ALPHA, memory_format="preserve")(x, y, target))
    runs["(a+c) floor through cushion"] = (args.steps, lambda n: floor_pgd(model, x, target, n, cushion))
    runs["(b+c) ours through cushion"] = (
        args.steps, lambda n: PGD(model, eps=EPS, steps=n, step_size=ALPHA, preprocess=cushion)(x, y, target))

    def cushion_cost(n: int) -> None:  # the cushion alone: forward + (BPDA) backward, n times
        for _ in range(n):
            xg = x.clone().requires_grad_(True)
            torch.autograd.grad(cushion(xg).sum(), xg)

    runs["cushion alone (fwd + bwd)"] = (args.steps, cushion_cost)

    def eval_forward(n: int) -> None:  # what a user adds to a library call to learn success (ours returns it)
        with torch.no_grad():
            for _ in range(n):
                model(x)

    runs["evaluation forward alone (no grad)"] = (args.lib_steps, eval_forward)

    notes = []
    try:
        import torchattacks

        def ta_run(n: int) -> object:
            atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=n, random_start=True)
            atk.set_mode_targeted_by_label(quiet=True)
            return atk(x, target)

        runs["(c) torchattacks PGD"] = (args.lib_steps, ta_run)
    except ImportError:
        notes.append("torchattacks not installed: skipped")
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescentNumpy, ProjectedGradientDescentPyTorch
        from art.defences.preprocessor import JpegCompression
        from art.estimators.classification import PyTorchClassifier

        x_np = x.numpy()
        y_onehot = np.eye(2, dtype=np.float32)[target.numpy()]

        def art_run(n: int, defences: list | None = None) -> object:
            clf = PyTorchClassifier(
                model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=2,
                clip_values=(0.0, 1.0), preprocessing_defences=defences, device_type="cpu",
            )
            # ART's PyTorch PGD refuses numpy preprocessing (JpegCompression): with it, ART runs its NumPy PGD
            impl = ProjectedGradientDescentPyTorch if not defences else ProjectedGradientDescentNumpy
            atk = impl(
                clf, norm=np.inf, eps=EPS, eps_step=ALPHA, max_iter=n, targeted=True, num_random_init=1,
                batch_size=args.batch, verbose=False,
            )
            return atk.generate(x_np, y=y_onehot)

        jpeg = JpegCompression(clip_values=(0.0, 1.0), quality=80, channels_first=True, apply_fit=False,
                               apply_predict=True)
        runs["(d) ART PGD"] = (args.lib_steps, art_run)
        runs["(d+c) ART PGD (NumPy impl.) through JpegCompression"] = (args.lib_steps, lambda n: art_run(n, [jpeg]))
    except ImportError:
        notes.append("adversarial-robustness-toolbox not installed: skipped")

    load0 = os.getloadavg()
    t_start = time.perf_counter()
    for _, fn in runs.values():  # warm-up
        fn(2)
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, (n, fn) in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(n)
            times[name].append((time.perf_counter() - t0) / n)
            cpu[name].append((time.process_time() - c0) / n)
    total = time.perf_counter() - t_start
    load1 = os.getloadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    floor = med["(a) floor: minimal loop"]
    ours = med["(b) ours: monai_aegis PGD"]
    floor_c = med["(a+c) floor through cushion"]
    ours_c = med["(b+c) ours through cushion"]
    cost = med["cushion alone (fwd + bwd)"]
    print(f"## Targeted PGD-Linf, ResNet-18 (2 classes), batch ({args.batch}, 3, {args.size}, {args.size}), "
          f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"\ncushion: {cushion_name}; median of {args.repeats} interleaved repeats after warm-up; "
          f"load average {load0[0]:.2f} -> {load1[0]:.2f} (1 min); total {total:.0f} s. "
          "CPU s = process CPU time (all threads) per step: unlike wall time it does not count time the machine's "
          "other tenants hold the cores.\n")
    print("| method | steps per call | s / step (median) | min / max | vs floor | vs ours | CPU s / step (median) "
          "| CPU vs floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (n, _) in runs.items():
        m = med[name]
        ref_floor = floor_c if "cushion" in name or "Jpeg" in name else floor  # noqa: SIM108
        ref_ours = ours_c if "cushion" in name or "Jpeg" in name else ours
        alone = " alone" in name
        vs_floor = "-" if alone else f"{m / ref_floor:.3f}x"
        vs_ours = "-" if alone else f"{m / ref_ours:.2f}x"
        ref_cpu = cpu_med["(a+c) floor through cushion" if ref_floor is floor_c else "(a) floor: minimal loop"]
        cpu_vs = "-" if alone else f"{cpu_med[name] / ref_cpu:.3f}x"
        print(f"| {name} | {n} | {m:.4f} | {min(times[name]):.4f} / {max(times[name]):.4f} | {vs_floor} | {vs_ours} "
              f"| {cpu_med[name]:.3f} | {cpu_vs} |")
    print("\nTargets:")
    print(f"- ours / floor = {ours / floor:.3f} (target <= 1.05)")
    fwd = med["evaluation forward alone (no grad)"]
    for lib in ("(c) torchattacks PGD", "(d) ART PGD"):
        if lib in med:
            with_eval = med[lib] + fwd / args.steps
            print(f"- ours faster than {lib[4:]}: {ours < med[lib]} ({med[lib] / ours:.3f}x ours); counting the one "
                  f"evaluation forward a user adds to learn success (ours includes it), over {args.steps} steps: "
                  f"{ours < with_eval} ({with_eval / ours:.3f}x ours)")
    if "(d+c) ART PGD (NumPy impl.) through JpegCompression" in med:
        art_c = med["(d+c) ART PGD (NumPy impl.) through JpegCompression"]
        print(f"- through the cushion, ours faster than ART: {ours_c < art_c} ({art_c / ours_c:.2f}x ours)")
    budget = floor + 1.2 * cost
    print(f"- through the cushion: ours {ours_c:.4f} s/step <= floor + 1.2 x cushion cost = {floor:.4f} + 1.2 x "
          f"{cost:.4f} = {budget:.4f}: {ours_c <= budget} (ours - floor = {ours_c - floor:.4f} = "
          f"{(ours_c - floor) / cost:.2f} x cushion cost)")
    for n in notes:
        print(f"- note: {n}")


if __name__ == "__main__":
    main()
