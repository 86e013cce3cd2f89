# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""``python -m monai_aegis evaluate``: the robustness evaluation of a saved AegisWrapper (attacks x detectors, with and
without Cushion, ablations, stress test, sanity checks) into ``results.json`` + ``report.md`` + figures.

Example (the embedded chest X-ray sample, a few attacks)::

    python -m monai_aegis evaluate --wrapper runs/cxr64/aegis_pgd_wb.pt --classifier runs/cxr64/classifier.pt \\
        --data kermany:../shared/data/chest_xray --size 64 --attacks PGD,CW-L2,WB --output runs/eval

With ``--worst-case`` it runs the worst-case adaptive evaluation (the robustness curve over eps; see
:mod:`monai_aegis.evaluation.worst_case`) -- alone, unless ``--attacks`` also asks for the per-attack tables::

    python -m monai_aegis evaluate --worst-case --wrapper bundles/aegis_cxr/models/aegis.pt --arch small_vgg \\
        --data sample --max-eval 64 --output runs/worst_case --set worst_case='{"steps": 100}'

A classifier alone (no Cushion, no Shield: e.g. an adversarially trained one, the robust baseline) is judged by the
same worst case with ``--classifier-weights`` instead of ``--wrapper``::

    python -m monai_aegis evaluate --worst-case --classifier-weights runs/at/models/classifier_at.pt \\
        --arch small_vgg --data sample --max-eval 64 --output runs/worst_case_at
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["add_parser", "parse_settings", "run"]


def parse_settings(pairs: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are parsed as JSON when possible (numbers, lists, ...), else strings."""
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}.")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="attack a saved AegisWrapper, score it and the baseline detectors, write a report",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    judged = p.add_mutually_exclusive_group(required=True)
    judged.add_argument("--wrapper", help="AegisWrapper checkpoint (AegisWrapper.save)")
    judged.add_argument("--classifier-weights", metavar="PATH",
                        help="instead of --wrapper, with --worst-case: judge a classifier alone (no Cushion, no "
                             "Shield), e.g. the bundle's adversarially trained models/classifier_at.pt; its weights "
                             "(state dict, safetensors or TorchScript) go into the architecture of --arch / "
                             "--classifier")
    p.add_argument("--classifier", help="classifier checkpoint giving the architecture (save_classifier format)")
    p.add_argument("--arch", help="architecture instead of --classifier: small_vgg, resnet18 or package.module:callable")
    p.add_argument("--arch-kwargs", default="{}", help="JSON keyword arguments of --arch")
    p.add_argument("--data", default="sample",
                   help="'sample' (embedded Kermany sample), 'kermany:<folder>' or 'fundus:<folder>'")
    p.add_argument("--size", type=int, default=64, help="image size")
    p.add_argument("--splits", default="", help="comma-separated evaluation splits (default: all but train/val)")
    p.add_argument("--substitute", help="classifier checkpoint of the transfer attack's substitute model")
    p.add_argument("--attacks", default="", help="comma-separated attacks (default: the paper's list)")
    p.add_argument("--detectors", default="", help="comma-separated detectors among shield,kd,lid,maha,dnn")
    p.add_argument("--config", help="JSON file with EvaluationConfig settings (a plain dict)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (JSON value), repeatable")
    p.add_argument("--max-eval", type=int,
                   help="images per evaluation split: a seeded subset, seed + i for the i-th split of --splits "
                        "(evaluate a split alone with --set seed=<seed + i> to get the same images)")
    p.add_argument("--n-fit", type=int, help="training images for the baselines")
    p.add_argument("--device", default=None, help="device (default: cuda when available, else cpu)")
    p.add_argument("--worst-case", action="store_true",
                   help="run the worst-case adaptive evaluation (robustness curve over eps); alone unless --attacks "
                        "is given too; its settings via --set worst_case='{...}'")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int,
                   help="CPU threads of this job (torch and the Cushion's JPEG workers; default: every core, or "
                        "$AEGIS_NUM_THREADS)")
    p.add_argument("--paper-protocol", action="store_true",
                   help="add what the paper's Tables 2-5 need (evaluation.PAPER_PROTOCOL: HFC-strengthened MIM / "
                        "BIM / CW-Linf, the ablations on Table 5's attacks) to the settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import EvaluationConfig, run_evaluation
    from ..evaluation.datasets import load_evaluation_splits
    from ..evaluation.report import summary_lines
    from ..networks import AegisWrapper
    from ..networks.nets.classifiers import build_classifier, load_classifier
    from ..utils import set_num_threads

    set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, root = args.data.partition(":")
    splits = load_evaluation_splits(kind, root or None, args.size, seed=args.seed)
    in_channels = int(splits["train"][0].shape[1])
    if args.classifier:
        clf, _ = load_classifier(args.classifier, in_channels=in_channels, num_classes=2)
    elif args.arch:
        clf = build_classifier(args.arch, in_channels=in_channels, num_classes=2, **json.loads(args.arch_kwargs))
    else:
        raise SystemExit("evaluate: give --classifier (a classifier checkpoint) or --arch to rebuild the classifier.")
    if args.classifier_weights:
        if not args.worst_case:
            raise SystemExit("evaluate: --classifier-weights judges a classifier alone, which has no Shield to score: "
                             "add --worst-case (its undefended curve is the classifier's robust accuracy).")
        from ..bundle import is_torchscript, load_network
        from ..networks.nets.aegis import _FORMAT as AEGIS_FORMAT
        from ..utils import safe_torch_load

        path = args.classifier_weights
        ckpt = (safe_torch_load(path) if str(path).endswith((".pt", ".pth")) and os.path.isfile(path)
                and not is_torchscript(path) else None)
        if isinstance(ckpt, dict) and ckpt.get("format") == AEGIS_FORMAT:
            raise SystemExit(f"evaluate: '{path}' is an AegisWrapper checkpoint (classifier, Shield, thresholds): "
                             "judge it with --wrapper; --classifier-weights takes a classifier's weights alone.")
        wrapper = AegisWrapper(load_network(clf, path, map_location=device).eval())
    else:
        wrapper = AegisWrapper.load(args.wrapper, clf, map_location=device)
    wrapper = wrapper.to(device)
    substitute = load_classifier(args.substitute, in_channels=in_channels)[0].to(device) if args.substitute else None

    settings: dict[str, Any] = {}
    if args.paper_protocol:
        from ..evaluation import PAPER_PROTOCOL

        settings.update(PAPER_PROTOCOL)
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            settings.update(json.load(f))
    if args.attacks:
        settings["attacks"] = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if args.detectors:
        settings["detectors"] = [d.strip() for d in args.detectors.split(",") if d.strip()]
    for key in ("max_eval", "n_fit"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.worst_case:
        settings.setdefault("worst_case", {})
        if not args.attacks:  # the curve alone: no per-attack tables, baselines, ablations, stress test or sweep
            settings.update(attacks=[], detectors=["shield"], cushion_modes=["with"], layer_ablation_attacks=[],
                            cushion_ablation=[], stress_samples=0, sanity_eps=[])
    settings.setdefault("seed", args.seed)
    settings.setdefault("device", device)
    if kind in ("kermany", "sample"):
        settings.setdefault("class_names", ["NORMAL", "PNEUMONIA"])
    settings.update(parse_settings(args.set))
    config = EvaluationConfig.from_dict(settings)

    names = [s for s in args.splits.split(",") if s] or [s for s in splits if s not in ("train", "val")]
    unknown = [s for s in names if s not in splits]
    if unknown:
        raise SystemExit(f"evaluate: unknown split(s) {unknown}; available: {list(splits)}.")
    results = run_evaluation(wrapper, splits["train"], {s: splits[s] for s in names}, splits["val"], config,
                             output_dir=args.output, substitute=substitute)
    print(f"wrote {args.output}/report.md and results.json ({len(results['detection'])} detection results, "
          f"{results['timing']['total']:.0f} s)")
    print("\n".join(summary_lines(results)))
    return 0
