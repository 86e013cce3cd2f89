"""The training summary's reduced worst case on saved ``aegis_cxr`` bundle runs, side by side, on any split of the
bundle's datalists -- e.g. to compare two Shield recipes trained on the same classifier on the validation split
(in-distribution; both thresholds were calibrated there, so clean acceptance is about the calibrated TNR for both),
where the training summary reports the official test split only:

    python scripts/bundle_worst_case.py --runs runs/full_old runs/full_new --dataset_dir ../shared/data/chest_xray \\
        --split val --out runs/bundle_worst_case_val.json

Each run folder is a ``--bundle_root`` of ``bundles/aegis_cxr/train.json`` (its ``models/aegis.pt``); the classifier
architecture is the bundle's ``network_def``. The budget is :data:`monai_aegis.bundle.SUMMARY_WORST_CASE` (at most
``--max-images`` images of the split, a seeded random subset), overridable with ``--set '{"steps": 100}'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monai_aegis.utils import atomic_write_json, json_safe  # noqa: E402


def split_tensors(parser, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split of the bundle's datalists, preprocessed as the bundle does."""
    from monai_aegis.evaluation.datasets import stack_datalist

    items = parser.get_parsed_content("datalists")
    if split not in items:
        raise ValueError(f"split {split!r} is not one of the bundle's datalists {sorted(items)}.")
    return stack_datalist(items[split], int(parser["image_size"]), int(parser["channels"]))


def main(argv: list[str] | None = None) -> dict:
    from monai.bundle import ConfigParser

    from monai_aegis.bundle import SUMMARY_WORST_CASE, load_aegis, seeded_subset
    from monai_aegis.evaluation import WorstCaseConfig, worst_case_evaluation

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="bundle_root folders of finished training runs")
    ap.add_argument("--config", default=str(ROOT / "bundles" / "aegis_cxr" / "train.json"))
    ap.add_argument("--dataset_dir", default="", help="the bundle's dataset_dir ('' for the embedded sample)")
    ap.add_argument("--holdout_fraction", type=float, default=0.0,
                    help="the runs' holdout_fraction (the same for all of them), for --split holdout")
    ap.add_argument("--split", default="val", help="datalist split to evaluate on (train, val, test, holdout)")
    ap.add_argument("--max-images", type=int, default=64)
    ap.add_argument("--set", default="{}", help="JSON overrides of the worst-case settings")
    ap.add_argument("--out", required=True, help="JSON file of the results")
    args = ap.parse_args(argv)

    parser = ConfigParser()
    parser.read_config(args.config)
    parser.update({"dataset_dir": args.dataset_dir, "holdout_fraction": args.holdout_fraction})
    x, y = split_tensors(parser, args.split)
    xv = x if args.split == "val" else split_tensors(parser, "val")[0]
    settings = {**SUMMARY_WORST_CASE, **json.loads(args.set)}
    settings.pop("max_images", None)
    cfg = WorstCaseConfig.from_dict(settings)
    idx = seeded_subset(y.numel(), args.max_images, cfg.seed)  # the training summary's choice of images
    results: dict = {"split": args.split, "n_split": int(y.numel()), "n_images": int(idx.numel()),
                     "settings": cfg.to_dict(), "runs": {}}
    for run in args.runs:
        wrapper = load_aegis(parser.get_parsed_content("network_def"), Path(run) / "models" / "aegis.pt")
        with torch.no_grad():
            clean = wrapper.screen(x)
        t0 = time.time()
        record = worst_case_evaluation(wrapper, x[idx], y[idx], xv, cfg)
        results["runs"][run] = {
            "clean_accuracy": float((clean["pred"] == y).float().mean()),
            "clean_accepted": float(clean["accept"].float().mean()),
            "curve": [{k: r.get(k) for k in ("eps", "robust_accuracy", "undefended_robust_accuracy")}
                      for r in record["curve"]],
            "seconds": round(time.time() - t0, 1),
        }
        atomic_write_json(args.out, json_safe(results))  # after every run: a cut-off keeps the finished ones
    eps = [r["eps"] for r in next(iter(results["runs"].values()))["curve"]]
    print(f"reduced worst case on {results['n_images']} of the {results['n_split']} {args.split} images")
    print("| run | clean acc | clean accepted | " + " | ".join(f"{e * 256:g}/256" for e in eps) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in eps) + " |")
    for run, r in results["runs"].items():
        print(f"| {run} | {r['clean_accuracy']:.3f} | {r['clean_accepted']:.3f} | "
              + " | ".join(f"{c['robust_accuracy']:.3f}" for c in r["curve"]) + " |")
    return results


if __name__ == "__main__":
    main()
