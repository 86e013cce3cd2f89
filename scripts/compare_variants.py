"""Defence variants side by side under the worst-case adaptive evaluation (docs/results.md, "Variants").

Every variant is built from the library's options (``build_aegis(shield_inputs=...)``, ``ShieldAdversary``,
``RandBenignShift``, ``adversarially_finetune``) on one shared clean classifier, calibrated at 90 % TNR on the
validation split, and judged by :func:`monai_aegis.evaluation.worst_case_evaluation` on the evaluation splits,
with clean acceptance on each split beside the curve. Stages are checkpointed under ``--out`` (a rerun skips
finished variants):

    python scripts/compare_variants.py --dataset sample --out runs/variants_sample
    python scripts/compare_variants.py --dataset kermany --root ../shared/data/chest_xray --out runs/variants_cxr \\
        --variants features,input_shift,at,at_features --n-eval 64

``--mask-check VARIANT`` runs the gradient-masking checks on one trained variant instead: the worst case at
growing budgets up to an unbounded one (robust accuracy must fall to about 0), with more steps and a larger
black-box query budget, with and without its Cushion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monai_aegis.networks import per_sample_threshold  # noqa: E402
from monai_aegis.utils import atomic_torch_save, atomic_write_json, json_safe, safe_torch_load  # noqa: E402

#: variant name -> recipe. ``classifier``: "clean" or "at" (TRADES fine-tuned); ``shield``: None (the classifier
#: alone, no Cushion) or the Shield options; every Shield variant sits behind the JPEG-80 Cushion.
VARIANTS: dict[str, dict[str, Any]] = {
    "features": {"classifier": "clean", "shield": {"inputs": "features"}},
    "input": {"classifier": "clean", "shield": {"inputs": "input"}},
    "both": {"classifier": "clean", "shield": {"inputs": "both"}},
    "features_shift": {"classifier": "clean", "shield": {"inputs": "features", "benign_shift": True}},
    "input_shift": {"classifier": "clean", "shield": {"inputs": "input", "benign_shift": True}},
    "input_accepted": {"classifier": "clean", "shield": {"inputs": "input", "negatives": "accepted",
                                                          "threshold_tnr": 0.9}},
    "input_joint": {"classifier": "clean", "shield": {"inputs": "input", "adversaries": ["pgd", "apgd_joint"],
                                                       "negatives": "accepted", "threshold_tnr": 0.9}},
    "input_joint_shift": {"classifier": "clean", "shield": {"inputs": "input", "adversaries": ["pgd", "apgd_joint"],
                                                             "negatives": "accepted", "threshold_tnr": 0.9,
                                                             "benign_shift": True}},
    "paper": {"classifier": "clean", "shield": {"inputs": "features", "adversaries": ["shield_pgd"]}},
    "at": {"classifier": "at", "shield": None},
    "at_features": {"classifier": "at", "shield": {"inputs": "features"}},
    "at_input": {"classifier": "at", "shield": {"inputs": "input"}},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dict_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, augment: bool = False) -> Any:
    """A MONAI DataLoader of ``{"image", "label"}`` batches over tensors (the bundle's flip + shift augmentation)."""
    from monai_aegis.transforms import classification_augmentation
    from monai_aegis.utils import tensor_loader

    return tensor_loader(x, y, batch_size, classification_augmentation(seed=seed) if augment else None, shuffle=True,
                         seed=seed)


def get_classifier(out: Path, kind: str, splits: dict, args: argparse.Namespace) -> torch.nn.Module:
    from monai_aegis.bundle import accuracy, train_classifier
    from monai_aegis.engines import adversarially_finetune
    from monai_aegis.networks.nets import small_vgg

    path = out / f"classifier_{kind}.pt"
    net = small_vgg(in_channels=splits["train"][0].shape[1], num_classes=2, width=32, convs_per_block=2)
    if path.is_file():
        net.load_state_dict(safe_torch_load(path)["state_dict"])
        return net.eval()
    t0 = time.perf_counter()
    if kind == "clean":
        torch.manual_seed(args.seed)
        info = train_classifier(net, dict_loader(*splits["train"], 32, args.seed, augment=True), epochs=15, lr=1e-3)
    else:
        net.load_state_dict(get_classifier(out, "clean", splits, args).state_dict())
        torch.manual_seed(args.seed)
        info = adversarially_finetune(net, dict_loader(*splits["train"], 32, args.seed, augment=True),
                                      eps=args.at_eps, epochs=args.at_epochs, steps=10, lr=1e-4, method="trades",
                                      beta=1.0)
    val = dict_loader(*splits["val"], 128, 0)
    info.update(seconds=time.perf_counter() - t0, val_accuracy=accuracy(net.eval(), val))
    atomic_torch_save({"state_dict": net.state_dict(), "info": json.dumps(info)}, path)
    log(f"classifier {kind}: {info}")
    return net.eval()


def get_variant(out: Path, name: str, splits: dict, args: argparse.Namespace) -> Any:
    from monai_aegis.bundle import build_aegis
    from monai_aegis.engines import ShieldAdversary, ShieldTrainer
    from monai_aegis.handlers import EpsilonScheduler
    from monai_aegis.networks import AegisWrapper
    from monai_aegis.transforms import RandBenignShift

    recipe = VARIANTS[name]
    clf = get_classifier(out, recipe["classifier"], splits, args)
    spec = recipe["shield"]
    if spec is None:  # the classifier alone: its training cost is the adversarial fine-tuning (0 for "clean")
        seconds = 0.0
        if recipe["classifier"] != "clean":
            seconds = json.loads(safe_torch_load(out / f"classifier_{recipe['classifier']}.pt")["info"])["seconds"]
        return AegisWrapper(clf), {"train_seconds": seconds}
    path = out / f"aegis_{name}.pt"
    shape = tuple(splits["train"][0].shape[1:])
    wrapper = build_aegis(clf, shape, 2, None, "jpeg80", shield_width=32, shield_hidden=64,
                          shield_inputs=spec["inputs"])
    if path.is_file():
        return AegisWrapper.load(path, clf), safe_torch_load(path.with_suffix(".json.pt"))
    torch.manual_seed(args.seed)
    adversary = ShieldAdversary(wrapper, attacks=spec.get("adversaries", ["pgd", "wb"]), steps=args.shield_steps,
                                negatives=spec.get("negatives", "objective"))
    augment = None
    if spec.get("benign_shift"):
        augment = RandBenignShift()
        augment.set_random_state(args.seed)
    trainer = ShieldTrainer("cpu", args.shield_epochs, dict_loader(*splits["train"], 32, args.seed), wrapper,
                            torch.optim.Adam(wrapper.shield.parameters(), 1e-3), adversary=adversary,
                            train_handlers=[EpsilonScheduler(1 / 256, 16 / 256, max(1, args.shield_epochs - 2))],
                            seed=args.seed, augment=augment, threshold_tnr=spec.get("threshold_tnr"))
    t0 = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - t0
    wrapper.calibrate(splits["val"][0], tnr=0.9)
    wrapper.save(path)
    info = {"train_seconds": seconds}
    atomic_torch_save(info, path.with_suffix(".json.pt"))
    log(f"variant {name}: Shield trained in {seconds:.0f} s, threshold {wrapper.threshold.tolist()}")
    return wrapper, info


def worst_case_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"eps": [e / 256 for e in args.eps], "steps": args.steps, "pgd_steps": args.pgd_steps,
            "lams": [0.3, 1.0], "proxies": args.proxies.split(","),
            "blackbox_eps": [e / 256 for e in args.eps if e >= 8], "blackbox_queries": args.queries,
            "convergence_samples": 0, "seed": args.seed}


def pick(split: tuple, n: int) -> tuple:
    x, y = split
    if n and n < len(y):  # a class-balanced, seeded subset
        g = torch.Generator().manual_seed(0)
        idx = torch.cat([torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)][: n // 2]
                         for c in (0, 1)])
        x, y = x[idx], y[idx]
    return x, y


def evaluate(out: Path, name: str, splits: dict, eval_splits: list[str], args: argparse.Namespace) -> dict:
    from monai_aegis.evaluation import worst_case_evaluation

    dest = out / f"wc_{name}.json"
    if dest.is_file():
        return json.loads(dest.read_text())
    wrapper, info = get_variant(out, name, splits, args)
    record = {"variant": name, "recipe": VARIANTS[name], **info, "splits": {}}
    for s in eval_splits:
        x, y = pick(splits[s], args.n_eval)
        t0 = time.perf_counter()
        rec = worst_case_evaluation(wrapper, x, y, splits["val"][0], worst_case_settings(args))
        if wrapper.shield is not None:  # clean acceptance on the whole split, not only the evaluated subset
            scores, pred = wrapper.shield_scores(splits[s][0], batch_size=128)
            thr = per_sample_threshold(wrapper.threshold, pred)
            rec["clean"]["accepted_full_split"] = float((scores >= thr).float().mean())
        record["splits"][s] = rec
        log(f"{name} on {s}: " + ", ".join(f"{r['eps'] * 256:g}/256 {r['robust_accuracy']:.3f}" for r in rec["curve"])
            + f" (clean acc {rec['clean']['accuracy']:.3f}, accepted {rec['clean'].get('accepted')}), "
            f"{time.perf_counter() - t0:.0f} s")
    atomic_write_json(dest, json_safe(record))
    return record


def table(records: list[dict], eval_splits: list[str]) -> str:
    lines = []
    for s in eval_splits:
        eps = [r["eps"] * 256 for r in records[0]["splits"][s]["curve"]]
        lines += [f"\n**{s}** (system robust accuracy under the per-image worst case)\n",
                  "| variant | clean acc | accepted (eval / full split) | " + " | ".join(f"{e:g}/256" for e in eps)
                  + " | training (s) |",
                  "|---" * (4 + len(eps)) + "|"]
        und = records[0]["splits"][s]["curve"]
        lines.append("| undefended classifier | " + f"{records[0]['splits'][s]['clean']['accuracy']:.3f} | - | "
                     + " | ".join(f"{r['undefended_robust_accuracy']:.3f}" for r in und) + " | - |")
        for rec in records:
            r = rec["splits"][s]
            acc = r["clean"].get("accepted")
            full = r["clean"].get("accepted_full_split")
            accepted = "-" if acc is None or full is None else f"{acc:.3f} / {full:.3f}"
            lines.append(f"| {rec['variant']} | {r['clean']['accuracy']:.3f} | {accepted} | "
                         + " | ".join(f"{c['robust_accuracy']:.3f}" for c in r["curve"])
                         + f" | {rec.get('train_seconds', 0):.0f} |")
    return "\n".join(lines) + "\n"


def clean_record(out: Path, name: str, splits: dict, eval_splits: list[str], args: argparse.Namespace) -> dict:
    """Clean accuracy and acceptance of a variant on every split (no attacks)."""
    wrapper, info = get_variant(out, name, splits, args)
    record = {"variant": name, "recipe": VARIANTS[name], **info, "clean": {}}
    for s in ["val", *eval_splits]:
        x, y = splits[s]
        with torch.no_grad():
            res = [wrapper.screen(xb) for xb in x.split(128)]
        pred = torch.cat([r["pred"] for r in res])
        accept = torch.cat([r["accept"] for r in res])
        record["clean"][s] = {"accuracy": float((pred == y).float().mean()), "accepted": float(accept.float().mean())}
    atomic_write_json(out / f"clean_{name}.json", json_safe(record))
    log(f"{name} clean: {record['clean']}")
    return record


def clean_table(records: list[dict], split_names: list[str]) -> str:
    lines = ["\n**clean images only** (accuracy / accepted)\n",
             "| variant | " + " | ".join(split_names) + " |", "|---" * (1 + len(split_names)) + "|"]
    for rec in records:
        lines.append(f"| {rec['variant']} | " + " | ".join(
            f"{rec['clean'][s]['accuracy']:.3f} / {rec['clean'][s]['accepted']:.3f}" for s in split_names) + " |")
    return "\n".join(lines) + "\n"


def site_check(out: Path, names: list[str], splits: dict, args: argparse.Namespace) -> str:
    """Site recalibration on the official test split: thresholds from one half of its clean images
    (:func:`monai_aegis.bundle.recalibrate_site`, labels unused), acceptance measured on the other half."""
    import tempfile

    from monai_aegis.bundle import recalibrate_site

    x, _ = splits["test"]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
    half_a, half_b = x[perm[: len(x) // 2]], x[perm[len(x) // 2:]]
    lines = ["\n**site recalibration** (official test split: thresholds from a random half of its clean images, "
             "acceptance on the other half)\n",
             "| variant | accepted, validation thresholds | accepted, site thresholds | images used |",
             "|---|---|---|---|"]
    records = {}
    for name in names:
        wrapper, _ = get_variant(out, name, splits, args)
        if wrapper.shield is None:
            continue
        scores, pred = wrapper.shield_scores(half_b, batch_size=128)

        def accepted(thr: torch.Tensor) -> float:
            return float((scores >= per_sample_threshold(thr, pred)).float().mean())

        before = accepted(wrapper.threshold)
        with tempfile.TemporaryDirectory() as tmp:
            rep = recalibrate_site(wrapper, half_a, Path(tmp) / "site.pt", tnr=0.9)
        after = accepted(wrapper.threshold)
        records[name] = {"accepted_before": before, "accepted_after": after, "n_calibration": rep["n"],
                         "threshold_before": rep["threshold_before"], "threshold_after": rep["threshold_after"]}
        lines.append(f"| {name} | {before:.3f} | {after:.3f} | {rep['n']} + {len(half_b)} |")
        if args.site_eval:  # the worst case at the site thresholds, on images of the other half
            from monai_aegis.evaluation import worst_case_evaluation

            y = splits["test"][1]
            xb, yb = pick((half_b, y[perm[len(x) // 2:]]), args.n_eval)
            rec = worst_case_evaluation(wrapper, xb, yb, half_a, worst_case_settings(args))
            records[name]["worst_case"] = rec
            lines.append(f"|   worst case at the site thresholds ({len(yb)} images of the other half) | "
                         + ", ".join(f"{r['eps'] * 256:g}/256 {r['robust_accuracy']:.3f}" for r in rec["curve"])
                         + f" | accepted {rec['clean']['accepted']:.3f} | |")
            log(f"{name} at site thresholds: " + lines[-1])
    atomic_write_json(out / "site_check.json", json_safe(records))
    return "\n".join(lines) + "\n"


def mask_check(out: Path, name: str, splits: dict, split: str, args: argparse.Namespace) -> None:
    """Gradient-masking checks on one variant: unbounded budgets, more steps, more queries, no Cushion."""
    from monai_aegis.evaluation import worst_case_evaluation
    from monai_aegis.networks import AegisWrapper

    wrapper, _ = get_variant(out, name, splits, args)
    x, y = pick(splits[split], 32)
    settings = {"eps": [16 / 256, 1.0], "steps": 2 * args.steps, "pgd_steps": 2 * args.pgd_steps,
                "lams": [0.3, 1.0], "proxies": args.proxies.split(","), "blackbox_eps": [16 / 256],
                "blackbox_queries": 6 * args.queries,
                "convergence_samples": 0, "undefended": False, "seed": args.seed}
    result = {"variant": name, "split": split, "n": len(y)}
    rec = worst_case_evaluation(wrapper, x, y, splits["val"][0], settings)
    result["with_cushion"] = {"curve": rec["curve"], "blackbox": rec["blackbox"], "checks": rec["checks"]}
    log(f"mask check {name} (Cushion): " + ", ".join(f"{r['eps'] * 256:g}/256 {r['robust_accuracy']:.3f}"
                                                      for r in rec["curve"]))
    bare = AegisWrapper(wrapper.classifier, wrapper.shield, cushion=None, layer_names=wrapper.layer_names)
    bare.calibrate(splits["val"][0], tnr=0.9)
    rec = worst_case_evaluation(bare, x, y, splits["val"][0], {**settings, "proxies": ["identity"]})
    result["without_cushion"] = {"curve": rec["curve"], "blackbox": rec["blackbox"], "checks": rec["checks"]}
    log(f"mask check {name} (no Cushion, recalibrated): "
        + ", ".join(f"{r['eps'] * 256:g}/256 {r['robust_accuracy']:.3f}" for r in rec["curve"]))
    atomic_write_json(out / f"mask_{name}_{split}.json", json_safe(result))


def main(argv: list[str] | None = None) -> int:
    from monai_aegis.evaluation.datasets import load_evaluation_splits

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="sample", choices=["sample", "kermany"])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "chest_xray"))
    p.add_argument("--out", default="runs/variants_sample")
    p.add_argument("--cache", default="runs/cache")
    p.add_argument("--variants", default="features,input,both,at,at_features")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shield-epochs", type=int, default=20)
    p.add_argument("--shield-steps", type=int, default=10)
    p.add_argument("--at-eps", type=float, default=8, help="AT budget in 1/256")
    p.add_argument("--at-epochs", type=int, default=40)
    p.add_argument("--n-eval", type=int, default=64)
    p.add_argument("--eps", default="2,4,8,16", help="curve budgets in 1/256")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--pgd-steps", type=int, default=25)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--proxies", default="identity,smooth", help="BPDA proxies of the comparison's worst case")
    p.add_argument("--clean-only", default="", help="variants measured on clean images only (no attacks)")
    p.add_argument("--mask-check", default="", help="run the masking checks on this variant instead")
    p.add_argument("--site-check", default="", help="variants to recalibrate on half of the official test split")
    p.add_argument("--site-eval", action="store_true", help="with --site-check: worst case at the site thresholds")
    args = p.parse_args(argv)
    args.eps = [float(e) for e in args.eps.split(",")]
    args.at_eps = args.at_eps / 256
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_evaluation_splits(args.dataset, args.root if args.dataset != "sample" else None, 64,
                                    seed=args.seed, cache_dir=args.cache)
    eval_splits = [s for s in ("holdout", "test") if s in splits]
    log("splits: " + ", ".join(f"{k} {len(v[1])}" for k, v in splits.items()))
    if args.mask_check:
        mask_check(out, args.mask_check, splits, eval_splits[0], args)
        return 0
    if args.site_check:
        text = site_check(out, args.site_check.split(","), splits, args)
        (out / "site_check.md").write_text(text)
        print(text)
        return 0
    records = [evaluate(out, name, splits, eval_splits, args) for name in args.variants.split(",")]
    text = table(records, eval_splits)
    if args.clean_only:
        text += clean_table([clean_record(out, n, splits, eval_splits, args) for n in args.clean_only.split(",")],
                            ["val", *eval_splits])
    (out / "variants.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
