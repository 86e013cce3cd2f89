"""Reduced precision (``amp``) against float32, in one run: seconds per attack step, per Shield training iteration
and per screened batch, with what the precision changes in the result (attack success rate, accept decisions).

Models (random initialisation unless noted, eval mode, CPU, the threads torch is given):
torchvision ResNet-50 at 224 px (batch 16, 3 channels), EfficientNet-Lite0 at 224 px (batch 16, ImageNet weights,
when the ``pretrained`` extra is installed) and the bundles' ``small_vgg`` at 64 px (batch 32, grey). Each model is
wrapped by ``build_aegis`` (JPEG-80 Cushion; a Shield on the model's layer preset) with ``amp`` off and on:

* attack: 10-step targeted PGD-Linf (ε 16/256) through the Cushion with BPDA (``make_aegis_attack``), seconds per
  step, its success rate on the classifier and the mean target-logit margin it reached (float32 / amp; the same
  seed and inputs for both precisions);
* Shield iteration: one ``ShieldTrainer`` iteration (5-step PGD + WB adversaries on the batch, then the Shield's
  update on clean + adversarial halves), seconds per iteration;
* screening: ``AegisWrapper.screen`` on the batch, seconds per batch, and the share of accept decisions that agree
  with float32 (thresholds calibrated in float32 on the same random batch).

Each measurement runs once to warm up, then ``--repeats`` times alternating float32 / amp; median wall time. The
speed-up is the ratio of medians. Random inputs, random labels: speed and agreement, not accuracy.

    python benchmarks/precision.py [--repeats 3] [--models resnet50,efficientnet_lite0,small_vgg]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's monai_aegis

EPS = 16 / 256


def build_model(name: str) -> tuple[torch.nn.Module, tuple[int, int, int], int]:
    """``(classifier, input shape, batch size)``."""
    if name == "resnet50":
        import torchvision

        return torchvision.models.resnet50(num_classes=2), (3, 224, 224), 16
    if name == "efficientnet_lite0":
        from monai_aegis.networks.nets import EfficientNetLite

        return EfficientNetLite(3, 2, pretrained=True, image_size=224), (3, 224, 224), 16
    if name == "small_vgg":
        from monai_aegis.networks.nets import small_vgg

        return small_vgg(1, 2), (1, 64, 64), 32
    raise ValueError(f"unknown model {name!r}")


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def shield_iteration(wrapper, x, y):
    from monai_aegis.engines import ShieldAdversary, ShieldTrainer

    loader = [(x, y)]
    trainer = ShieldTrainer("cpu", 1, loader, wrapper, torch.optim.Adam(wrapper.shield.parameters(), 1e-3),
                            adversary=ShieldAdversary(wrapper, attacks=["pgd", "wb"], steps=5), seed=0)
    return trainer.run  # a finished Ignite engine restarts: one epoch = one iteration at the default eps 16/256


def measure(name: str, repeats: int) -> list[dict]:
    from monai_aegis.attacks import make_aegis_attack
    from monai_aegis.networks import build_aegis

    torch.manual_seed(0)
    model, shape, batch = build_model(name)
    wrappers = {}
    for amp in (False, True):
        wrappers[amp] = build_aegis(model, shape, 2, cushion="jpeg80", shield_width=16, shield_hidden=32, seed=0,
                                    amp=amp)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((batch, *shape), generator=g)
    y = torch.randint(0, 2, (batch,), generator=g)
    wrappers[False].calibrate(x, tnr=0.5, per_class=False)
    for w in wrappers.values():
        w.shield.load_state_dict(wrappers[False].shield.state_dict())
        w.set_threshold(wrappers[False].threshold)
    with torch.no_grad():
        target = 1 - wrappers[False](x).argmax(1)
    rows = []
    results = {}
    for amp, w in wrappers.items():
        attack = make_aegis_attack("PGD", w, eps=EPS, steps=10)

        def run_attack(attack=attack):
            torch.manual_seed(0)
            return attack(x, target=target)
        t_att, res = timed(run_attack, repeats)
        with torch.no_grad():
            t_scr, out = timed(lambda w=w: w.screen(x), repeats)
        t_it, _ = timed(shield_iteration(w, x, y), repeats)
        margin = (res.logits.gather(1, target[:, None]) - res.logits.gather(1, 1 - target[:, None])).mean()
        results[amp] = (t_att / 10, (float(res.success.float().mean()), float(margin)), t_it, t_scr, out["accept"])
    (a32, s32, i32, c32, acc32), (a16, s16, i16, c16, acc16) = results[False], results[True]
    agree = float((acc32 == acc16).float().mean())
    rows.append(dict(model=name, what="attack step (s)", fp32=a32, amp=a16,
                     note=f"success {s32[0]:.2f} / {s16[0]:.2f}, target margin {s32[1]:.2f} / {s16[1]:.2f}"))
    rows.append(dict(model=name, what="Shield iteration (s)", fp32=i32, amp=i16, note=""))
    rows.append(dict(model=name, what="screen batch (s)", fp32=c32, amp=c16, note=f"accept agreement {agree:.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="resnet50,efficientnet_lite0,small_vgg")
    args = parser.parse_args()
    from monai_aegis.utils import cpu_supports_bf16, resolve_amp

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, amp=True -> {resolve_amp(True, 'cpu')} "
          f"(native bfloat16: {cpu_supports_bf16()})")
    print("| model | measure | float32 | amp | speed-up | result |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        try:
            rows = measure(name.strip(), args.repeats)
        except ImportError as e:
            print(f"| {name} | skipped: {e} | | | | |")
            continue
        for r in rows:
            print(f"| {r['model']} | {r['what']} | {r['fp32']:.3f} | {r['amp']:.3f} | {r['fp32'] / r['amp']:.2f}x | "
                  f"{r['note']} |", flush=True)


if __name__ == "__main__":
    main()
