"""Real-data experiment: train a classifier, train the Shield, and run the robustness evaluation.

Stages (each checkpointed under ``--out``; a rerun skips the finished ones, an interrupted Shield training resumes
from its last epoch):

1. ``data``: load the dataset into tensors (patient-grouped train / val / hold-out parts of the official train split,
   plus the official test split), cached in ``<out>/cache``.
2. ``classifier``: train the protected classifier from scratch (no pretrained weights), and a substitute model of
   another architecture for the transfer attack.
3. ``shield``: train one Shield per recipe (adversary mix), through the JPEG-80 Cushion (Aegis mode), calibrate its
   threshold on the validation part at 90 % TNR and save the wrapper (``aegis_<recipe>.pt``).
4. ``evaluate``: :func:`monai_aegis.evaluation.run_evaluation` on the ``holdout`` and ``test`` parts; the first recipe
   gets the full evaluation (all tables, ablations, stress test, sanity checks), the others the main tables.

CPU scale (the default, about an hour on two shared cores)::

    python scripts/run_cxr_experiment.py --root ../shared/data/chest_xray --out runs/cxr64

Full scale on a GPU (the paper's image size and budgets; ResNet-18 from scratch, see docs/results.md)::

    python scripts/run_cxr_experiment.py --root /data/chest_xray --out runs/cxr224 --device cuda --size 224 \\
        --arch resnet18 --clf-epochs 30 --shield-epochs 25 --shield-steps 10 --shield-images 0 --n-eval 0 \\
        --conv-steps 20 --adaptive-steps 100 --cw-search 6 --cw-steps 200
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monai_aegis.engines import accuracy, train_classifier  # noqa: E402
from monai_aegis.evaluation.datasets import load_evaluation_splits  # noqa: E402
from monai_aegis.networks.nets.classifiers import SMALL_VGG_LAYERS, build_classifier  # noqa: E402
from monai_aegis.transforms import classification_augmentation  # noqa: E402
from monai_aegis.utils import (  # noqa: E402
    atomic_torch_save,
    safe_torch_load,
    tensor_loader,
)

#: Shield training recipes: name -> ShieldAdversary attacks
RECIPES = {"pgd_wb": ["pgd", "wb"], "shield_pgd": ["shield_pgd"], "pgd": ["pgd"]}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ classifier
def get_classifier(path: Path, arch: str, kwargs: dict, splits: dict, epochs: int, seed: int, device: str,
                   in_channels: int) -> nn.Module:
    model = build_classifier(arch, in_channels=in_channels, num_classes=2, **kwargs)
    if path.is_file():
        ckpt = safe_torch_load(path)
        model.load_state_dict(ckpt["state_dict"])
        log(f"loaded {path.name} ({arch}, {ckpt['info']})")
        return model.to(device).eval()
    log(f"training {path.name}: {arch} {kwargs}, {epochs} epochs on {len(splits['train'][0])} images")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    loader = tensor_loader(*splits["train"], 32, classification_augmentation(seed=seed), shuffle=True, seed=seed)
    info = train_classifier(model, loader, epochs, lr=1e-3, device=device)
    info.update(arch=arch, kwargs=kwargs, seconds=time.perf_counter() - t0,
                **{f"acc_{s}": accuracy(model, splits[s], device) for s in splits if s != "train"})
    atomic_torch_save({"arch": arch, "kwargs": kwargs, "state_dict": model.state_dict(), "info": json.dumps(info)},
                      path)
    log(f"saved {path.name}: " + ", ".join(f"{k} {v:.3f}" for k, v in info.items() if k.startswith("acc_")))
    return model.eval()


# ------------------------------------------------------------------------------------------------ Shield
def get_shield(out: Path, recipe: str, clf: nn.Module, splits: dict, args: argparse.Namespace) -> Path:
    from ignite.engine import Events
    from monai.handlers import CheckpointLoader, CheckpointSaver
    from torch.utils.data import DataLoader, TensorDataset

    from monai_aegis.engines import ShieldAdversary, ShieldTrainer
    from monai_aegis.handlers import EpsilonScheduler
    from monai_aegis.networks import (
        AegisWrapper,
        Shield,
        cushion_from_name,
        resolve_layer_names,
    )

    final = out / f"aegis_{recipe}.pt"
    if final.is_file():
        log(f"found {final.name}")
        return final
    torch.manual_seed(args.seed)
    x, y = splits["train"]
    if args.shield_images and args.shield_images < len(x):  # a class-stratified subset
        g = torch.Generator().manual_seed(args.seed)
        perm = torch.randperm(len(x), generator=g)[: args.shield_images]
        x, y = x[perm], y[perm]
    cushion = cushion_from_name(args.cushion)
    names = args.layers.split(",") if args.layers else (SMALL_VGG_LAYERS if args.arch == "small_vgg" else None)
    layers = resolve_layer_names(clf, names)
    shield = Shield.from_classifier(clf, layers, tuple(x.shape[1:]), 2, preprocess=cushion, width=args.shield_width,
                                    hidden=2 * args.shield_width)
    wrapper = AegisWrapper(clf, shield, cushion=cushion).to(args.device)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    sched = EpsilonScheduler(1 / 256, 16 / 256, max(1, args.shield_epochs - 2))
    trainer = ShieldTrainer(
        args.device, args.shield_epochs, loader, wrapper, torch.optim.Adam(shield.parameters(), 1e-3),
        adversary=ShieldAdversary(wrapper, attacks=RECIPES[recipe], steps=args.shield_steps),
        train_handlers=[sched],
    )
    ckdir = out / f"shield_{recipe}_ckpt"
    save = {"shield": shield, "optimizer": trainer.optimizer, "trainer": trainer, "eps": sched}
    last = sorted(ckdir.glob("*.pt"), key=lambda p: p.stat().st_mtime) if ckdir.is_dir() else []
    if last:
        log(f"resuming Shield {recipe} from {last[-1].name}")
        CheckpointLoader(str(last[-1]), save).attach(trainer)
    CheckpointSaver(str(ckdir), save, save_interval=1, n_saved=1).attach(trainer)
    t0 = time.perf_counter()
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: log(
        f"  Shield {recipe} epoch {e.state.epoch}/{args.shield_epochs}: eps {e.state.eps * 256:.1f}/256, "
        f"detection acc {e.state.metrics.get('detection_acc', float('nan')):.3f}, "
        f"adv success {e.state.output.get('adv_success', float('nan')):.2f}, {time.perf_counter() - t0:.0f} s"))
    log(f"training Shield {recipe} ({RECIPES[recipe]}), {args.shield_epochs} epochs x {args.shield_steps} steps "
        f"on {len(x)} images, layers {list(layers)}, cushion {args.cushion}")
    trainer.run()
    wrapper.calibrate(splits["val"][0], tnr=0.9)
    wrapper.calibration["train_seconds"] = time.perf_counter() - t0
    wrapper.calibration["recipe"] = recipe
    wrapper.save(final)
    log(f"saved {final.name}: threshold {wrapper.threshold.tolist()}, {time.perf_counter() - t0:.0f} s")
    return final


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(out: Path, recipe: str, path: Path, splits: dict, substitute: nn.Module, args: argparse.Namespace,
             full: bool, in_channels: int, clf_kwargs: dict) -> None:
    from monai_aegis.evaluation import run_evaluation
    from monai_aegis.networks import AegisWrapper

    dest = out / f"eval_{recipe}"
    if (dest / "results.json").is_file():
        log(f"found {dest}/results.json")
        return
    clf = build_classifier(args.arch, in_channels=in_channels, num_classes=2, **clf_kwargs)
    wrapper = AegisWrapper.load(path, clf, map_location=args.device)
    names = ["NORMAL", "PNEUMONIA"] if args.dataset == "kermany" else ["No DR", "DR"]
    config = {
        "max_eval": args.n_eval or None, "n_fit": args.n_fit, "conventional_steps": args.conv_steps,
        "adaptive_steps": args.adaptive_steps, "cw_binary_search_steps": args.cw_search, "cw_steps": args.cw_steps,
        "class_names": names, "ablation_split": "holdout", "seed": args.seed, "progress": False,
        "device": args.device,
    }
    if args.quick:
        config.update(stress_samples=4, stress_steps=2, sanity_samples=8, sanity_eps=[4 / 256, 1.0],
                      detector_kwargs={"dnn": {"epochs": 1}}, cushion_ablation=["identity", "jpeg80"])
    if not full:  # the comparison recipe: main tables with the Cushion only
        config.update(cushion_modes=["with"], layer_ablation_attacks=[], cushion_ablation=[], stress_samples=0,
                      sanity_eps=[], detectors=["shield"])
    log(f"evaluating {path.name} -> {dest} ({'full' if full else 'main tables'})")
    t0 = time.perf_counter()
    res = run_evaluation(wrapper, splits["train"], {"holdout": splits["holdout"], "test": splits["test"]},
                         splits["val"], config, output_dir=dest, substitute=substitute)
    log(f"wrote {dest}/report.md in {time.perf_counter() - t0:.0f} s; timing {res['timing']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="kermany", choices=["kermany", "fundus"])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    p.add_argument("--out", default="runs/cxr64")
    p.add_argument("--cache", default="runs/cache", help="folder of the cached image tensors")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--arch", default="small_vgg")
    p.add_argument("--width", type=int, default=32, help="small_vgg width")
    p.add_argument("--convs", type=int, default=2, help="small_vgg convolutions per block")
    p.add_argument("--clf-epochs", type=int, default=15)
    p.add_argument("--sub-arch", default="small_vgg", help="substitute architecture (transfer attack)")
    p.add_argument("--sub-epochs", type=int, default=10)
    p.add_argument("--layers", default="", help="comma-separated hooked layers (default: the architecture's)")
    p.add_argument("--cushion", default="jpeg80")
    p.add_argument("--recipes", default="pgd_wb,shield_pgd")
    p.add_argument("--shield-epochs", type=int, default=15)
    p.add_argument("--shield-steps", type=int, default=10)
    p.add_argument("--shield-images", type=int, default=0, help="Shield training images (0: all)")
    p.add_argument("--shield-width", type=int, default=32)
    p.add_argument("--stages", default="data,classifier,shield,evaluate")
    p.add_argument("--n-eval", type=int, default=200, help="images per evaluation split (0: all)")
    p.add_argument("--n-fit", type=int, default=256, help="training images for the baselines")
    p.add_argument("--conv-steps", type=int, default=20)
    p.add_argument("--adaptive-steps", type=int, default=100)
    p.add_argument("--cw-search", type=int, default=4)
    p.add_argument("--cw-steps", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="tiny smoke run of every stage")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = set(args.stages.split(","))
    in_channels = 3 if args.dataset == "fundus" else 1

    splits = load_evaluation_splits(args.dataset, args.root, args.size, seed=args.seed, cache_dir=args.cache)
    if args.quick:
        pick = {k: torch.randperm(len(v[1]), generator=torch.Generator().manual_seed(0))[:96] for k, v in splits.items()}
        splits = {k: (v[0][pick[k]], v[1][pick[k]]) for k, v in splits.items()}
        args.clf_epochs, args.sub_epochs, args.shield_epochs, args.shield_steps = 1, 1, 1, 1
        args.n_eval, args.n_fit, args.conv_steps, args.adaptive_steps, args.cw_search, args.cw_steps = 16, 32, 2, 2, 1, 2
    log("splits: " + ", ".join(f"{k} {len(v[1])} ({torch.bincount(v[1]).tolist()})" for k, v in splits.items()))
    if not stages & {"classifier", "shield", "evaluate"}:
        return 0
    clf_kwargs = {"width": args.width, "convs_per_block": args.convs} if args.arch == "small_vgg" else {}
    clf = get_classifier(out / "classifier.pt", args.arch, clf_kwargs, splits, args.clf_epochs, args.seed,
                         args.device, in_channels)
    sub_kwargs = {"width": 24, "convs_per_block": 1} if args.sub_arch == "small_vgg" else {}
    substitute = get_classifier(out / "substitute.pt", args.sub_arch, sub_kwargs, splits, args.sub_epochs,
                                args.seed + 1, args.device, in_channels)
    wrappers = {}
    if stages & {"shield", "evaluate"}:
        for recipe in args.recipes.split(","):
            wrappers[recipe] = get_shield(out, recipe, clf, splits, args)
    if "evaluate" in stages:
        for i, (recipe, path) in enumerate(wrappers.items()):
            evaluate(out, recipe, path, splits, substitute, args, full=i == 0, in_channels=in_channels,
                     clf_kwargs=clf_kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
