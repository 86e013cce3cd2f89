"""Fundus DR vs No DR with the ImageNet-pretrained EfficientNet-Lite0: fine-tuning against training from random
weights, and the learning curve over the size of the training set.

Data: a folder laid out like ``../shared/data/fundus`` (``labels.csv`` with ``file``, ``diagnosis_0_4``, ``split``,
``patient_id``), split as the ``aegis_fundus`` bundle splits it (:func:`monai_aegis.data.dataset_splits`: the CSV's
``train`` rows partitioned by patient into train / val (10 %), its ``test`` rows the hold-out ``test`` split).
Each run fine-tunes :class:`monai_aegis.networks.nets.EfficientNetLite` with the bundle's ``pretrained.json`` recipe
(AdamW, one-cycle lr 5e-4, balanced class weights, flips both ways, rotation up to 180 degrees, shifts) on a
patient-grouped, label-stratified fraction of the training part, with a fixed number of epochs -- nothing is chosen
on the test split. Reported per run on val and test: AUROC of the DR probability, accuracy, sensitivity and
specificity at the argmax.

    python scripts/fundus_pretrained.py --root ../shared/data/fundus --out runs/fundus224 \\
        --fractions 0.25,0.5,1 --inits imagenet,random

Each run is written to ``<out>/runs/<init>_<fraction>.json`` as it finishes (a rerun skips it) and the full-data
ImageNet model to ``<out>/classifier.pt`` (:func:`~monai_aegis.networks.nets.save_classifier`); ``<out>/summary.json``
and ``<out>/summary.md`` gather them.
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

from monai_aegis.data import patient_grouped_partition  # noqa: E402
from monai_aegis.engines import train_classifier  # noqa: E402
from monai_aegis.evaluation.datasets import load_evaluation_splits  # noqa: E402
from monai_aegis.metrics import detection_auroc  # noqa: E402
from monai_aegis.networks.nets import EfficientNetLite, save_classifier  # noqa: E402
from monai_aegis.transforms import classification_augmentation  # noqa: E402
from monai_aegis.utils import atomic_write_json, tensor_loader  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips / quarter turns of a batch of square images (a fundus photograph has no up)."""
    views = [x, x.flip(-1)]
    for k in (1, 2, 3):
        views += [torch.rot90(x, k, (-2, -1)), torch.rot90(x, k, (-2, -1)).flip(-1)]
    return views


@torch.no_grad()
def classification_metrics(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 32,
                           tta: bool = False) -> dict:
    """AUROC of the DR probability, accuracy, sensitivity (DR) and specificity (No DR) at the argmax; ``tta``
    averages the probability over the 8 dihedral views."""
    model.eval()

    def prob_of(xb: torch.Tensor) -> torch.Tensor:
        views = dihedral(xb) if tta else [xb]
        return torch.stack([model(v).softmax(1)[:, 1] for v in views]).mean(0)

    prob = torch.cat([prob_of(xb) for xb in x.split(batch)])
    pred = (prob > 0.5).long()
    pos, neg = y == 1, y == 0
    return {
        "n": int(len(y)),
        "auroc": detection_auroc(prob[neg], prob[pos]),
        "accuracy": float((pred == y).float().mean()),
        "sensitivity": float((pred[pos] == 1).float().mean()),
        "specificity": float((pred[neg] == 0).float().mean()),
    }


def subset(y: torch.Tensor, groups: list, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a patient-grouped, label-stratified ``fraction`` of the training part."""
    if fraction >= 1:
        return torch.arange(len(y))
    items = [{"index": i, "patient_id": g, "label": int(c)} for i, (g, c) in enumerate(zip(groups, y.tolist()))]
    keep, _ = patient_grouped_partition(items, (fraction, 1 - fraction), seed=seed)
    return torch.as_tensor(sorted(item["index"] for item in keep))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "fundus"))
    p.add_argument("--out", default="runs/fundus224")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--fractions", default="0.25,0.5,1")
    p.add_argument("--inits", default="imagenet,random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--evaluate", default="", help="only evaluate this saved classifier (plain and 8-view TTA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    splits = load_evaluation_splits("fundus", args.root, args.size, val_fraction=0.1, holdout_fraction=0.0,
                                    seed=args.seed, cache_dir=out / "cache")
    from monai_aegis.data import dataset_splits

    lists = dataset_splits("fundus", args.root, val_fraction=0.1, seed=args.seed)
    groups = [str(item.get("patient_id", i)) for i, item in enumerate(lists["train"])]
    x_train, y_train = splits["train"]
    if len(groups) != len(y_train):
        raise RuntimeError("the cached training tensors do not match the datalist; delete the cache.")
    log("data: " + ", ".join(f"{k} {tuple(v[0].shape)}" for k, v in splits.items())
        + f" ({time.perf_counter() - t0:.0f} s)")

    if args.evaluate:
        from monai_aegis.networks.nets import load_classifier

        model, _ = load_classifier(args.evaluate, in_channels=3, num_classes=2)
        report = {f"{s}{'_tta' if tta else ''}": classification_metrics(model, *splits[s], tta=tta)
                  for s in ("val", "test") for tta in (False, True)}
        x_test, y_test = splits["test"]
        grades = torch.as_tensor([int(it["grade"]) for it in lists["test"]])
        if not torch.equal((grades > 0).long(), y_test):
            raise RuntimeError("the test tensors do not follow the datalist's order; delete the cache.")
        by_grade = {}  # each DR grade against No DR (grade 0): where the classifier fails
        for name, keep in [*((f"grade {g} vs 0", (grades == g) | (grades == 0)) for g in (1, 2, 3, 4)),
                           ("referable (2-4) vs 0", (grades != 1))]:
            m = classification_metrics(model, x_test[keep], y_test[keep], tta=True)
            by_grade[name] = {"n_dr": int(y_test[keep].sum()), "auroc_tta": m["auroc"],
                              "sensitivity_tta": m["sensitivity"]}
        report["test_by_grade"] = by_grade
        atomic_write_json(out / "evaluation.json", {"classifier": args.evaluate, **report})
        print(json.dumps(report, indent=1))
        return
    augment = classification_augmentation(shift=args.size // 16, shift_prob=0.8, rotate=180, vertical_flip_prob=0.5,
                                           seed=args.seed)
    records = []
    for init in args.inits.split(","):
        for fraction in (float(f) for f in args.fractions.split(",")):
            path = out / "runs" / f"{init}_{fraction:g}.json"
            if path.is_file():
                records.append(json.loads(path.read_text()))
                log(f"{path.name}: done before")
                continue
            idx = subset(y_train, groups, fraction, args.seed)
            torch.manual_seed(args.seed)
            model = EfficientNetLite(3, 2, pretrained=init == "imagenet", image_size=args.size)
            loader = tensor_loader(x_train[idx], y_train[idx], args.batch, augment, shuffle=True, seed=args.seed)
            t = time.perf_counter()
            info = train_classifier(model, loader, args.epochs, lr=args.lr)
            record = {"init": init, "fraction": fraction, "n_train": int(len(idx)),
                      "n_dr": int(y_train[idx].sum()), "epochs": args.epochs, "lr": args.lr, "size": args.size,
                      "seconds": round(time.perf_counter() - t, 1), "final_loss": info["loss"],
                      **{s: classification_metrics(model, *splits[s]) for s in ("val", "test")},
                      **{f"{s}_tta": classification_metrics(model, *splits[s], tta=True) for s in ("val", "test")}}
            atomic_write_json(path, record)
            records.append(record)
            log(f"{path.name}: {len(idx)} images, {record['seconds']:.0f} s, test AUROC "
                f"{record['test']['auroc']:.3f}, val AUROC {record['val']['auroc']:.3f}")
            if init == "imagenet" and fraction >= 1:
                save_classifier(model, out / "classifier.pt", "efficientnet_lite", record, pretrained=True,
                                image_size=args.size)
    done = {(r["init"], r["fraction"]) for r in records}  # and the runs an earlier invocation finished
    records += [r for r in (json.loads(f.read_text()) for f in sorted((out / "runs").glob("*.json")))
                if (r["init"], r["fraction"]) not in done]
    records.sort(key=lambda r: (r["init"] != "imagenet", -r["fraction"]))
    atomic_write_json(out / "summary.json", {"settings": vars(args), "runs": records})
    lines = ["| init | training images | test AUROC | test acc | sensitivity | specificity | test AUROC, 8-view TTA | "
             "val AUROC | training s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in records:
        te = r["test"]
        tta = r.get("test_tta", {}).get("auroc")
        lines.append(f"| {r['init']} | {r['n_train']} | {te['auroc']:.3f} | {te['accuracy']:.3f} | "
                     f"{te['sensitivity']:.3f} | {te['specificity']:.3f} | "
                     f"{'-' if tta is None else f'{tta:.3f}'} | {r['val']['auroc']:.3f} | {r['seconds']:.0f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
