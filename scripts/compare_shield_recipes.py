"""Compare Shield training recipes (which attackers the training adversary uses) on the embedded sample.

For each recipe: train a Shield in Aegis mode (JPEG-80 Cushion) on the embedded chest X-ray sample's train split
for a small CNN classifier, calibrate on the val split at 90% TNR, and evaluate on the test split against a
detector-unaware targeted PGD (20 steps) and the white-box WB attack (50 steps), both L-inf 16/256 through the
Cushion with BPDA. Prints a markdown table (mean and spread over seeds).

Run: ``python scripts/compare_shield_recipes.py [--size 32] [--epochs 20] [--seeds 0 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from monai_aegis.data import load_sample_arrays
from monai_aegis.engines import ShieldAdversary, ShieldTrainer, train_classifier
from monai_aegis.evaluation import evaluate_shield_detection
from monai_aegis.handlers import EpsilonScheduler
from monai_aegis.networks import AegisWrapper, Shield, cushion_from_name
from monai_aegis.utils import tensor_loader

RECIPES = {
    "shield_pgd (paper, Eq. 3)": ["shield_pgd"],
    "wb": ["wb"],
    "pgd": ["pgd"],
    "shield_pgd + pgd": ["shield_pgd", "pgd"],
    "shield_pgd + wb + pgd": ["shield_pgd", "wb", "pgd"],
    "spgd + pgd": ["spgd", "pgd"],
}


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 2),
    )


def fit_classifier(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 15) -> nn.Module:
    """The library's classifier recipe (:func:`monai_aegis.engines.train_classifier`) on the small CNN."""
    torch.manual_seed(seed)
    clf = small_cnn()
    train_classifier(clf, tensor_loader(x, y, 32, shuffle=True, seed=seed), epochs=epochs, lr=1e-3)
    return clf.eval()


def run_recipe(clf: nn.Module, data: dict, attackers: list[str], args: argparse.Namespace, seed: int) -> dict:
    torch.manual_seed(seed)
    cushion = cushion_from_name("jpeg80")
    shield = Shield.from_classifier(clf, ["2", "6", "10"], (1, args.size, args.size), 2, width=16, hidden=32,
                                    preprocess=cushion)
    wrapper = AegisWrapper(clf, shield, cushion=cushion)
    x, y = data["train"]
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    trainer = ShieldTrainer("cpu", args.epochs, loader, wrapper, torch.optim.Adam(shield.parameters(), 1e-3),
                            adversary=ShieldAdversary(wrapper, attacks=attackers, steps=args.steps), seed=seed,
                            train_handlers=[EpsilonScheduler(1 / 256, 16 / 256, args.epochs)])
    t0 = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - t0
    wrapper.calibrate(data["val"][0], tnr=0.9)
    out = {"train_s": seconds, "train_acc": trainer.state.metrics["detection_acc"]}
    for name, steps in (("PGD", 20), ("WB", 50)):
        m = evaluate_shield_detection(wrapper, data["test"], name, {"steps": steps}).metrics()
        out[f"{name}_auroc"] = m["auroc"]
        out[f"{name}_success_undetected"] = m["attack_success"] * (m["adv_accepted"] if m["n_successful"] else 0.0)
    out["clean_accepted"] = m["clean_accepted"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = {s: load_sample_arrays(s, args.size) for s in ("train", "val", "test")}
    results: dict[str, list[dict]] = {k: [] for k in RECIPES}
    for seed in args.seeds:
        clf = fit_classifier(*data["train"], seed)
        with torch.no_grad():
            acc = (clf(data["test"][0]).argmax(1) == data["test"][1]).float().mean().item()
        print(f"seed {seed}: classifier test accuracy {acc:.3f}", flush=True)
        for name, attackers in RECIPES.items():
            results[name].append(run_recipe(clf, data, attackers, args, seed))
            print(f"  {name}: {results[name][-1]}", flush=True)

    def fmt(vals: list[float]) -> str:
        if len(vals) == 1:
            return f"{vals[0]:.3f}"
        return f"{statistics.mean(vals):.3f} ({min(vals):.2f}-{max(vals):.2f})"

    print(f"\nEmbedded sample, {args.size} px, small CNN, JPEG-80 Cushion, {args.epochs} epochs x {args.steps} steps, "
          f"eps ramp 1/256 -> 16/256; test split (64 images), seeds {args.seeds}; mean (min-max)\n")
    print("| training attackers | AUROC vs PGD-20 | AUROC vs WB-50 | PGD success & accepted | WB success & accepted "
          "| clean accepted | train s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rs in results.items():
        col = lambda k: fmt([r[k] for r in rs])  # noqa: E731
        print(f"| {name} | {col('PGD_auroc')} | {col('WB_auroc')} | {col('PGD_success_undetected')} | "
              f"{col('WB_success_undetected')} | {col('clean_accepted')} | {statistics.mean(r['train_s'] for r in rs):.0f} |")


if __name__ == "__main__":
    main()
