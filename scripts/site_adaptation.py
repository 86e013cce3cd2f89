"""Site adaptation against site recalibration, measured on the Kermany official test split as "another site"
(docs/results.md, "Clean images of another pipeline").

The test split was exported by another pipeline (squashed 224 px JPEG) than the training split. It is divided into two
patient-disjoint halves: the *site* half plays the hospital's few hundred clean, unlabelled local images, the *eval*
half the studies the hospital screens afterwards. Three deployments of one trained ``aegis_cxr`` bundle run are
compared on the eval half (and on the hold-out split, prepared like the training images):

* ``shipped``: as trained, thresholds from the validation split;
* ``recalibrated``: thresholds moved to the site half (:func:`monai_aegis.bundle.recalibrate_site`);
* ``adapted``: the Shield fine-tuned on the site half mixed with the training images, thresholds recalibrated on the
  original validation split (:func:`monai_aegis.engines.adapt_shield_to_site`, the defaults of ``adapt.json``).

Each gets clean accuracy / acceptance per split (in-sample where a deployment was fitted on it: ``val`` for all,
``site`` for recalibrated and adapted) and the training summary's reduced worst case
(:data:`monai_aegis.bundle.SUMMARY_WORST_CASE`) on the same seeded images, at the deployment's own thresholds and, for
SR@5 / SR@10, at thresholds that reject 5 / 10 % of the *site* half's clean images (the same clean rejection in the
site's domain for all three). ``--site-half 1`` swaps the halves, so two runs measure every test image out of
sample (cross-fitting); ``--control`` adapts on as many training images instead of the site half (the same
fine-tuning at the final budget, without a second pipeline's images); ``--benign-shift`` adds
:class:`~monai_aegis.transforms.RandBenignShift` to the fine-tuning. The run must be a default ``aegis_cxr`` run
(64 px, PGD + WB training attackers with 10 steps, the default outliers), trained with ``--holdout_fraction 0.2``::

    python -m monai.bundle run --config_file bundles/aegis_cxr/train.json --bundle_root runs/full_holdout \\
        --dataset_dir ../shared/data/chest_xray --holdout_fraction 0.2
    python scripts/site_adaptation.py --run runs/full_holdout --root ../shared/data/chest_xray \\
        --out runs/site_adaptation.json
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monai_aegis.utils import atomic_write_json, json_safe  # noqa: E402

DEPLOYMENTS = ("shipped", "recalibrated", "adapted")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@torch.no_grad()
def clean_stats(wrapper: Any, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Clean accuracy, acceptance, and acceptance of the correctly classified images."""
    out = [wrapper.screen(xb) for xb in x.split(128)]
    pred, acc = torch.cat([o["pred"] for o in out]), torch.cat([o["accept"] for o in out])
    ok = pred == y
    return {"n": int(y.numel()), "accuracy": float(ok.float().mean()), "accepted": float(acc.float().mean()),
            "accepted_if_correct": float(acc[ok].float().mean()) if ok.any() else float("nan")}


def main(argv: list[str] | None = None) -> dict:
    from monai_aegis.bundle import SUMMARY_WORST_CASE, load_aegis, recalibrate_site, seeded_subset
    from monai_aegis.data import dataset_splits, patient_grouped_partition
    from monai_aegis.engines import ShieldAdversary, adapt_shield_to_site
    from monai_aegis.evaluation import worst_case_evaluation
    from monai_aegis.evaluation.datasets import load_evaluation_splits
    from monai_aegis.networks.nets import small_vgg
    from monai_aegis.transforms import RandBenignShift, RandOutlier

    defaults = {k: v.default for k, v in inspect.signature(adapt_shield_to_site).parameters.items()}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="bundle_root of an aegis_cxr run trained with --holdout_fraction 0.2")
    ap.add_argument("--root", required=True, help="the Kermany folder the run was trained on")
    ap.add_argument("--out", required=True, help="JSON file of the results (rewritten after every stage)")
    ap.add_argument("--epochs", type=int, default=defaults["epochs"])
    ap.add_argument("--epoch-length", type=int, default=defaults["epoch_length"])
    ap.add_argument("--lr", type=float, default=defaults["lr"])
    ap.add_argument("--site-fraction", type=float, default=defaults["site_fraction"])
    ap.add_argument("--site-half", type=int, choices=(0, 1), default=0,
                    help="which patient-disjoint half of the test split is the site (the other is evaluated); "
                         "run both to measure the whole split out of sample (cross-fitting)")
    ap.add_argument("--control", action="store_true",
                    help="adapt on as many *training* images as the site half has, instead of the site half: the "
                         "same fine-tuning without a second pipeline's images (what the held final budget does alone)")
    ap.add_argument("--benign-shift", default=None, metavar="JSON",
                    help="adapt with RandBenignShift(**JSON) on the images (positives and the sources of negatives), "
                         "e.g. '{}' for its defaults; default: no augmentation, as the bundle default trains")
    ap.add_argument("--deployments", default=",".join(DEPLOYMENTS),
                    help=f"comma-separated subset of {','.join(DEPLOYMENTS)}")
    ap.add_argument("--adapted-model", default=None,
                    help="where the adapted wrapper is written "
                         "(default: <run>/models/aegis_site_adapted_half[1][_control][_shift].pt)")
    ap.add_argument("--max-images", type=int, default=64,
                    help="images per split of the reduced worst case (0: clean accuracy and acceptance only)")
    ap.add_argument("--set", default="{}", help="JSON overrides of the worst-case settings")
    ap.add_argument("--network", default='{"width": 32, "convs_per_block": 2}',
                    help="JSON keyword arguments of the bundle's small_vgg (its network_def)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.max_images < 0:
        ap.error(f"--max-images must be 0 (clean figures only) or a positive number of images, got {args.max_images}")
    deployments = [d.strip() for d in args.deployments.split(",") if d.strip()]
    unknown = sorted(set(deployments) - set(DEPLOYMENTS))
    if unknown or not deployments:
        ap.error(f"--deployments takes a subset of {','.join(DEPLOYMENTS)}, got {args.deployments!r}")

    splits = load_evaluation_splits("kermany", args.root, 64, val_fraction=0.1, holdout_fraction=0.2, seed=args.seed,
                                    cache_dir=Path(args.run) / "cache")
    items = dataset_splits("kermany", args.root, val_fraction=0.1, holdout_fraction=0.2, seed=args.seed)["test"]
    if [int(it["label"]) for it in items] != splits["test"][1].tolist():
        raise RuntimeError("the test tensors are not in the datalist's order: cannot split them by patient.")
    for i, it in enumerate(items):  # the tensors keep the datalist's order
        it["_index"] = i
    halves = patient_grouped_partition(items, (0.5, 0.5), seed=args.seed)
    site_items, eval_items = halves[args.site_half], halves[1 - args.site_half]
    x_test, y_test = splits["test"]
    i_site = torch.tensor([it["_index"] for it in site_items])
    i_eval = torch.tensor([it["_index"] for it in eval_items])
    parts = {"val": splits["val"], "holdout": splits["holdout"], "site": (x_test[i_site], y_test[i_site]),
             "eval": (x_test[i_eval], y_test[i_eval])}
    x_val = splits["val"][0]  # the thresholds' calibration images of the shipped and adapted deployments
    x_adapt = parts["site"][0]
    if args.control:  # as many training images, seeded: the training pipeline only (the same image set as the
        # committed control runs, which drew them unsorted: their batch order differed, the images did not)
        x_adapt = splits["train"][0][seeded_subset(int(splits["train"][1].numel()), x_adapt.shape[0], args.seed + 2)]
    res: dict[str, Any] = {"run": args.run, "n": {k: int(v[1].numel()) for k, v in parts.items()},
                           "settings": vars(args), "adaptation_images": "train (control)" if args.control else "site",
                           "deployments": {}}

    def network() -> torch.nn.Module:
        return small_vgg(in_channels=1, num_classes=2, **json.loads(args.network))

    models = Path(args.run) / "models"
    built = {"shipped": load_aegis(network(), models / "aegis.pt")}
    if "recalibrated" in deployments:
        built["recalibrated"] = copy.deepcopy(built["shipped"])
        res["recalibration"] = recalibrate_site(built["recalibrated"], parts["site"][0],
                                                models / f"aegis_site_half{args.site_half or ''}.pt")
    if "adapted" in deployments:
        adapted = built["adapted"] = copy.deepcopy(built["shipped"])
        log(f"adapting the Shield to {res['adaptation_images']} images")
        res["adaptation"] = adapt_shield_to_site(
            adapted, x_adapt, splits["train"], x_val,
            adversary=ShieldAdversary(adapted, ["pgd", "wb"], steps=10), epochs=args.epochs,
            epoch_length=args.epoch_length, lr=args.lr, site_fraction=args.site_fraction, seed=args.seed,
            outliers=RandOutlier().set_random_state(args.seed + 1),  # the bundle default's outlier negatives
            augment=None if args.benign_shift is None else
            RandBenignShift(**json.loads(args.benign_shift)).set_random_state(args.seed))
        default_name = (f"aegis_site_adapted_half{args.site_half or ''}{'_control' if args.control else ''}"
                        f"{'_shift' if args.benign_shift is not None else ''}.pt")
        adapted.save(args.adapted_model or models / default_name)
        atomic_write_json(args.out, json_safe(res))

    cfg = {**SUMMARY_WORST_CASE, **json.loads(args.set)}
    cfg.pop("max_images", None)
    n_max = args.max_images
    res["worst_case_budget"] = {**cfg, "max_images": n_max}
    for name, wrapper in ((d, built[d]) for d in DEPLOYMENTS if d in deployments):
        rec: dict[str, Any] = {"thresholds": wrapper.threshold.tolist(),
                               "clean": {k: clean_stats(wrapper, *v) for k, v in parts.items()}}
        log(f"{name}: {rec['clean']}")
        res["deployments"][name] = rec
        atomic_write_json(args.out, json_safe(res))
        for split in ("eval", "holdout") if n_max > 0 else ():
            x, y = parts[split]
            idx = seeded_subset(int(y.numel()), n_max, args.seed)
            wc = worst_case_evaluation(wrapper, x[idx], y[idx], parts["site"][0], cfg)
            keep = ("eps", "robust_accuracy", "success_rate", "sr")
            rec[f"worst_case_{split}"] = {"n": int(idx.numel()), "clean": wc["clean"], "seconds": wc["seconds"],
                                          "curve": [{k: r[k] for k in keep if k in r} for r in wc["curve"]]}
            log(f"{name} {split}: " + ", ".join(f"{r['eps'] * 256:g}/256 {r['robust_accuracy']:.3f}"
                                                 for r in wc["curve"]))
            atomic_write_json(args.out, json_safe(res))
    return res


if __name__ == "__main__":
    main()
