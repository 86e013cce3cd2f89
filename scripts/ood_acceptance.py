"""Out-of-distribution acceptance of saved bundle models (docs/results.md, "Inputs that are not chest X-rays").

For each checkpoint: the share of accepted clean test images and of inputs that are not images of the task --
every :class:`~monai_aegis.transforms.RandOutlier` kind made from the test images, and, held out from any training,
photographs of another organ (``--other-dir``, e.g. the shared fundus copy, read through the bundle's own
preprocessing) -- at the model's calibrated threshold:

    python scripts/ood_acceptance.py --ckpt bundles/aegis_cxr/models/aegis.pt --other-dir ../shared/data/fundus \\
        --out runs/ood/ood.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from monai.bundle import ConfigParser

    from monai_aegis.bundle import load_aegis, stack_loader
    from monai_aegis.data.files import expand_image_paths
    from monai_aegis.evaluation import outlier_acceptance
    from monai_aegis.transforms import classification_transforms
    from monai_aegis.utils import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", action="append", required=True, help="Aegis checkpoint(s) of the bundle (repeatable)")
    p.add_argument("--bundle", default=str(ROOT / "bundles" / "aegis_cxr"), help="bundle folder (its train.json)")
    p.add_argument("--other-dir", help="folder of images of another kind (held-out outliers)")
    p.add_argument("--max-other", type=int, default=64, help="images read from --other-dir")
    p.add_argument("--out", help="JSON file for the table")
    args = p.parse_args(argv)

    parser = ConfigParser()
    parser.read_config(str(Path(args.bundle) / "train.json"))
    x, _ = stack_loader(parser.get_parsed_content("test#dataloader"))
    extra = {}
    if args.other_dir:
        pre = classification_transforms(parser["image_size"], parser["channels"])
        files = expand_image_paths([args.other_dir], recursive=True)[: args.max_other]
        extra["other images"] = torch.stack([torch.as_tensor(pre({"image": f})["image"]) for f in files])
    table = {}
    for ckpt in args.ckpt:
        wrapper = load_aegis(parser.get_parsed_content("network_def", instantiate=True, lazy=False), ckpt)
        table[ckpt] = outlier_acceptance(wrapper, x, extra=extra)
    names = list(next(iter(table.values())))
    print("| input | n | " + " | ".join(f"accepted ({Path(c).parent.parent.name}/{Path(c).name})" for c in table)
          + " |")
    print("| --- | ---: |" + " ---: |" * len(table))
    for name in names:
        n = next(iter(table.values()))[name]["n"]
        print(f"| {name} | {n} | " + " | ".join(f"{t[name]['accepted']:.3f}" for t in table.values()) + " |")
    if args.out:
        atomic_write_json(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
