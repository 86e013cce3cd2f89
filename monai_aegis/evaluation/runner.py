# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The robustness evaluation runner: attacks x detectors x cushion settings, ablations, stress test, sanity checks.

:func:`run_evaluation` takes a defended model (an :class:`~monai_aegis.networks.AegisWrapper`: classifier, Cushion,
Shield, threshold), clean training data (to fit the baseline detectors), evaluation splits and an
:class:`EvaluationConfig`, and returns (and writes, with ``output_dir``) the results described in
``docs/evaluation.md``:

* per split and cushion setting (with the wrapper's Cushion -- the attacker goes through it with BPDA -- and
  without), every attack is crafted **once** on the evaluation images, targeted to another class, and every
  detector (the Shield and the KD / LID / MAHA / DNN baselines) scores the same clean and adversarial images:
  AUROC and TPR at 90 % TNR (the paper's Tables 2-4), attack success, undetected success, robust accuracy of the
  classifier alone and of classifier + each detector, mean perturbation norms, and the same per attack direction;
* the layer ablation (baselines -- and Shields given in ``shield_variants`` -- on subsets of the hooked layers)
  and the Cushion ablation (JPEG 90/80/70, bit depth 5/4, TVM: clean accuracy, Shield detection, robust accuracy);
* the stress test (:func:`~monai_aegis.evaluation.stress.stress_test`);
* sanity checks against gradient masking (success rises with eps and reaches ~100 % unbounded; white-box success
  >= transfer success).

Protocol (as in the detection literature): detection metrics compare the clean images the classifier gets right
with the *successful* adversarial versions of those images; attack success rates are over those images too;
robust accuracy is over all images (an image is defended when its adversarial version is rejected or still
classified correctly). Detector thresholds for acceptance / robust accuracy are calibrated on clean validation
images at the configured TNR (the Shield keeps the wrapper's own calibrated threshold in its native setting).

Baselines are fitted on the training images (``n_fit`` of them): KD and MAHA on clean features, LID and DNN also on
features of adversarial examples crafted on those images with a fixed attack (``fit_attack``, PGD by default --
the standard protocol). With a Cushion all features are those of ``f(C(x))``, without of ``f(x)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..metrics import tpr_key
from ..networks import AegisWrapper
from ..networks.nets.classifiers import architecture_name
from ..utils import json_safe, stack_batches
from .detection import detection_metrics, other_class_targets
from .progress import Progress
from .schema import SCHEMA_VERSION, validate_results
from .settings import (
    ADAPTIVE_ATTACKS,
    BASELINE_DETECTORS,
    DEFAULT_ATTACKS,
    SHIELD_ATTACKS,
    EvaluationConfig,
    _key,
    _spec,
    default_layer_subsets,
)
from .stress import stress_test
from .studies import cushion_ablation_study, layer_ablation_study, sanity_study
from .system import (
    AttackFactory,
    DefendedSystem,
    calibrate_detectors,
    craft,
    fit_baselines,
    mean_of,
    robust_of,
    subsample,
)
from .worst_case import worst_case_evaluation

__all__ = [
    "ADAPTIVE_ATTACKS",
    "BASELINE_DETECTORS",
    "DEFAULT_ATTACKS",
    "EvaluationConfig",
    "default_layer_subsets",
    "run_evaluation",
]


# ------------------------------------------------------------------------------------------------------ main
def run_evaluation(
    wrapper: AegisWrapper,
    train_data: Any,
    eval_data: Any,
    val_data: Any = None,
    config: EvaluationConfig | Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    substitute: nn.Module | None = None,
    shield_variants: Mapping[str, AegisWrapper] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate a defended classifier against attacks, next to the baseline detectors; see the module docstring.

    Args:
        wrapper: the :class:`~monai_aegis.networks.AegisWrapper` (classifier, Cushion, Shield, threshold). It is not
            modified (the "without Cushion" setting and the ablations use copies sharing its modules).
        train_data: clean training images with labels (an ``(images, labels)`` pair or an iterable of batches) for
            fitting the baselines (``n_fit`` of them) and the HFC feature model, and for Fea's guide images.
        eval_data: evaluation images: ``{split name: data}`` or one dataset (named ``"eval"``).
        val_data: clean validation images (labels unused) to calibrate acceptance thresholds; default: the training
            images used for fitting (biased towards acceptance; a note says so).
        config: an :class:`EvaluationConfig` or a plain dict of its attributes.
        output_dir: write ``results.json``, ``report.md`` and the figures there (atomically); ``None``: no files.
        substitute: substitute classifier of the transfer attack ``TF`` (same input format).
        shield_variants: ``{layer subset name: AegisWrapper}`` Shields trained on subsets of the layers, scored in the
            layer ablation on the same adversarial images (keys from ``config.layer_subsets``).
        **overrides: attributes of :class:`EvaluationConfig` overriding ``config``.

    Returns:
        the results dict (the content of ``results.json``; see ``docs/evaluation.md``).

    Example::

        results = run_evaluation(wrapper, (x_train, y_train), {"test": (x_test, y_test)}, (x_val, y_val),
                                 attacks=["PGD", "CW-L2", "WB"], output_dir="runs/eval")
    """
    t_start = time.perf_counter()
    if isinstance(config, EvaluationConfig):
        cfg = dataclasses.replace(config, **overrides) if overrides else config
    else:
        cfg = EvaluationConfig.from_dict(config, **overrides)
    if not isinstance(wrapper, AegisWrapper):
        raise TypeError(f"wrapper must be an AegisWrapper, got {type(wrapper).__name__}.")
    notes: list[str] = []
    device = torch.device(cfg.device) if cfg.device else next(wrapper.classifier.parameters()).device
    torch.manual_seed(cfg.seed)
    wrapper.eval()

    # -------------------------------------------------------------------- data
    x_tr, y_tr = subsample(*stack_batches(train_data, name="train_data"), cfg.n_fit, cfg.seed)
    # the i-th split draws its subset with seed + i (recorded as data.splits.<split>.subset_seed)
    if isinstance(eval_data, Mapping):
        named = {str(k): (v, f"eval_data[{k!r}]") for k, v in eval_data.items()}
    else:
        named = {"eval": (eval_data, "eval_data")}
    subset_seeds = {k: cfg.seed + i for i, k in enumerate(named)}
    splits = {k: subsample(*stack_batches(v, name=label), cfg.max_eval, subset_seeds[k])
              for k, (v, label) in named.items()}
    if not splits:
        raise ValueError("eval_data holds no split.")
    if val_data is None:
        x_val, val_source = x_tr, "training images (no validation data given)"
        notes.append("No validation data was given: acceptance thresholds are calibrated on the training images.")
    else:
        x_val, val_source = stack_batches(val_data, name="val_data")[0], "validation images"
    ablation_split = cfg.ablation_split or next(iter(splits))
    if ablation_split not in splits:
        raise ValueError(f"ablation_split {ablation_split!r} is not an evaluation split ({list(splits)}).")

    with torch.no_grad():
        num_classes = int(wrapper.classifier(wrapper.preprocess(x_tr[:2].to(device))).shape[1])
    class_names = list(cfg.class_names or [str(c) for c in range(num_classes)])
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries for {num_classes} classes.")
    has_shield = wrapper.shield is not None
    detectors = [d for d in cfg.detectors if d != "shield" or has_shield]
    if "shield" in cfg.detectors and not has_shield:
        notes.append("The wrapper has no Shield: the Shield rows and the Shield-aware attacks are skipped.")
    attacks = [a for a in cfg.attacks if has_shield or _key(_spec(a)[1]) not in SHIELD_ATTACKS]
    if substitute is None and any(_key(_spec(a)[1]) == "tf" for a in attacks):
        attacks = [a for a in attacks if _key(_spec(a)[1]) != "tf"]
        notes.append("No substitute model was given: the transfer attack TF is skipped.")
    if substitute is not None:
        substitute = substitute.to(device).eval()
    layers = tuple(cfg.layers) if cfg.layers else tuple(wrapper.layer_names)
    readers = [what for what, reads in (
        ("the baseline detectors", any(d in BASELINE_DETECTORS for d in detectors)),
        ("the stress test", cfg.stress_samples > 0),
        ("the feature-space attacks Fea / HFC", any(_key(_spec(a)[1]) in ("fea", "hfc") for a in attacks)),
    ) if reads]
    if not layers and readers:  # e.g. a classifier alone (no Shield) judged by the worst case needs none
        raise ValueError(f"no hooked layers for {', '.join(readers)}: give config.layers or a wrapper with "
                         "layer_names.")

    # guides of the feature-space attack: one correctly classified training image per class
    with torch.no_grad():
        tr_pred = torch.cat([wrapper(xb.to(device)).argmax(1).cpu() for xb in x_tr.split(cfg.batch_size)])
    guides = []
    for c in range(num_classes):
        idx = ((y_tr == c) & (tr_pred == c)).nonzero()[:, 0]
        idx = idx if idx.numel() else (y_tr == c).nonzero()[:, 0]
        guides.append(x_tr[idx[0]] if idx.numel() else x_tr[0])
    factory = AttackFactory(cfg, torch.stack(guides), (x_tr, y_tr), substitute)

    # -------------------------------------------------------------------- systems
    cushion_name = getattr(wrapper.cushion, "name", type(wrapper.cushion).__name__) if wrapper.cushion else "none"
    modes = [m for m in cfg.cushion_modes if m == "without" or wrapper.cushion is not None]
    if "with" in cfg.cushion_modes and wrapper.cushion is None:
        notes.append("The wrapper has no Cushion: only the setting without Cushion is evaluated.")
    if not modes:
        modes = ["without"]
    baselines = [d for d in detectors if d in BASELINE_DETECTORS]
    n_fit_jobs = x_tr.shape[0] * len(modes) if any(BASELINE_DETECTORS[b][2] for b in baselines) else 0
    bar = Progress(cfg.progress, n_fit_jobs, "fitting baselines")
    systems: OrderedDict[str, DefendedSystem] = OrderedDict()
    fit_info: dict[str, Any] = {"n": int(x_tr.shape[0]), "n_adversarial": 0, "fit_attack": cfg.fit_attack}
    t0 = time.perf_counter()
    for mode in modes:
        if mode == "with":
            w = wrapper
            label = cushion_name
        else:
            w = AegisWrapper(wrapper.classifier, wrapper.shield, cushion=None, amp=wrapper.amp)
            if has_shield and wrapper.threshold.numel():
                w.set_threshold(wrapper.threshold)
            label = "none"
        system = DefendedSystem(label, w, layers, cfg, device)
        info = fit_baselines(system, baselines, x_tr, y_tr, factory, cfg, notes, bar)
        fit_info["n_adversarial"] = max(fit_info["n_adversarial"], info["n_adversarial"])
        recal = has_shield and (mode == "without" or not wrapper.threshold.numel())
        calibrate_detectors(system, x_val, cfg, recalibrate_shield=recal)
        systems[label] = system
    bar.close()
    if has_shield and "none" in systems and wrapper.cushion is not None:
        notes.append(f"Without Cushion, the Shield (trained on features of the {cushion_name} Cushion) scores f(x) "
                     "with a threshold re-calibrated on clean validation images.")
    timing: dict[str, float] = {"fit_baselines": time.perf_counter() - t0}

    # -------------------------------------------------------------------- main tables
    clean_records, detection, attack_records, directions = [], [], [], []
    roc_scores: dict[tuple[str, str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    keep_adv: dict[tuple[str, str, str], torch.Tensor] = {}
    examples: dict[str, Any] = {}
    ablation_attacks = list(cfg.layer_ablation_attacks)
    ablation_labels = {_spec(a)[0] for a in ablation_attacks}
    total = sum(x.shape[0] for x, _ in splits.values()) * len(systems) * len(attacks)
    bar = Progress(cfg.progress, total, "attacks")
    first_split, first_mode = next(iter(splits)), next(iter(systems))
    for split, (x, y) in splits.items():
        t = other_class_targets(y, num_classes, cfg.seed)
        for label, system in systems.items():
            clean = system.score(x, detectors)
            correct = clean.pred == y
            clean_records.append({
                "split": split, "cushion": label, "accuracy": mean_of(correct),
                "accepted": {d: mean_of(a) for d, a in clean.accept.items()},
            })
            for spec in attacks:
                name, attack = factory.build(spec, system)
                bar.set(f"{split}/{label}/{name}")
                t_a = time.perf_counter()
                x_adv = craft(attack, x, y, t, cfg.batch_size, device, bar)
                seconds = time.perf_counter() - t_a
                adv = system.score(x_adv, detectors)
                success = (adv.pred == t) & correct
                delta = (x_adv - x).flatten(1)
                linf, l2 = delta.abs().amax(1), delta.norm(dim=1)
                shield_acc = adv.accept.get("shield", torch.ones_like(success))
                robust = {"classifier": robust_of(torch.ones_like(success), adv.pred, y)}
                robust.update({d: robust_of(a, adv.pred, y) for d, a in adv.accept.items()})
                attack_records.append({
                    "split": split, "cushion": label, "attack": name, "n": int(correct.sum()),
                    "success_rate": mean_of(success[correct]), "undetected_success": mean_of((success & shield_acc)[correct]),
                    "robust_accuracy": robust, "mean_linf": mean_of(linf[success]), "mean_l2": mean_of(l2[success]),
                    "seconds": seconds,
                })
                for d in clean.scores:
                    m = detection_metrics(clean.scores[d], adv.scores[d], correct, success, cfg.tnr)
                    detection.append({
                        "split": split, "cushion": label, "attack": name, "detector": d, "auroc": m["auroc"],
                        "tpr": m[tpr_key(cfg.tnr)], "n_clean": m["n_clean"], "n_adv": m["n_adv"],
                        "adv_accepted": mean_of(adv.accept[d][success]),
                    })
                    roc_scores[(split, label, name, d)] = (clean.scores[d][correct], adv.scores[d][success])
                for src in range(num_classes):
                    for dst in range(num_classes):
                        sel = correct & (y == src) & (t == dst)
                        if src == dst or not sel.any():
                            continue
                        rec = {"split": split, "cushion": label, "attack": name, "source": class_names[src],
                               "target": class_names[dst], "n": int(sel.sum()), "success_rate": mean_of(success[sel]),
                               "undetected_success": mean_of((success & shield_acc)[sel]),
                               "robust_accuracy": robust_of(shield_acc[y == src], adv.pred[y == src], y[y == src]),
                               "auroc": float("nan"), "tpr": float("nan")}
                        if "shield" in clean.scores:
                            neg = correct & (y == dst)
                            m = detection_metrics(clean.scores["shield"], adv.scores["shield"], neg, sel & success,
                                                  cfg.tnr)
                            rec["auroc"], rec["tpr"] = m["auroc"], m[tpr_key(cfg.tnr)]
                        directions.append(rec)
                if split == ablation_split and label == first_mode and name in ablation_labels:
                    keep_adv[(split, label, name)] = x_adv
                if split == first_split and label == first_mode:
                    examples.setdefault("adv", {})[name] = (x_adv[: max(cfg.n_examples * 4, 16)], success)
            if split == first_split and label == first_mode:
                examples.update(x=x[: max(cfg.n_examples * 4, 16)], y=y, t=t, correct=correct)
    bar.close()
    timing["attacks"] = sum(r["seconds"] for r in attack_records)

    # -------------------------------------------------------------------- layer ablation
    t0 = time.perf_counter()
    layer_ablation = layer_ablation_study(systems[first_mode], splits[ablation_split], ablation_split, ablation_attacks,
                                     keep_adv, factory, cfg, baselines, shield_variants, notes, num_classes)
    timing["layer_ablation"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- cushion ablation
    t0 = time.perf_counter()
    cushion_ablation = cushion_ablation_study(wrapper, splits[ablation_split], ablation_split, x_val, factory, cfg, device,
                                         layers, num_classes) if has_shield else []
    timing["cushion_ablation"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- stress test
    t0 = time.perf_counter()
    stress: list[dict[str, Any]] = []
    if cfg.stress_samples > 0:
        xs = subsample(*splits[ablation_split], cfg.stress_samples, cfg.seed + 3)[0]
        cushions = {"none": None}
        if wrapper.cushion is not None:
            cushions[cushion_name] = wrapper.cushion
        sbar = Progress(cfg.progress, xs.shape[0] * len(cushions), "stress test")
        stress = stress_test(wrapper.classifier, xs.to(device), layers, cfg.stress_eps, cfg.stress_steps, cushions,
                             cfg.batch_size, progress=sbar)
        sbar.close()
    timing["stress_test"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- sanity checks
    t0 = time.perf_counter()
    sanity = sanity_study(systems[first_mode], splits[ablation_split], attack_records, ablation_split, first_mode, factory,
                     cfg, device, num_classes)
    timing["sanity"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- worst case
    worst_case: dict[str, Any] | None = None
    if cfg.worst_case is not None:
        t0 = time.perf_counter()
        wc_cfg = cfg.worst_case_config()
        wc_splits = list(cfg.worst_case_splits or splits)
        unknown = [s for s in wc_splits if s not in splits]
        if unknown:
            raise ValueError(f"worst_case_splits {unknown} are not evaluation splits ({list(splits)}).")
        x_wc_val = x_val if val_data is not None else None
        worst_case = {"settings": wc_cfg.to_dict(), "splits": {}}
        for split in wc_splits:
            worst_case["splits"][split] = worst_case_evaluation(wrapper, *splits[split], x_wc_val, wc_cfg,
                                                                device=device)
        timing["worst_case"] = time.perf_counter() - t0

    fit_info_out = {"n": fit_info["n"], "n_adversarial": fit_info["n_adversarial"], "fit_attack": fit_info["fit_attack"]}
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": cfg.to_dict(),
        "system": {
            "classifier": architecture_name(wrapper.classifier), "num_classes": num_classes, "class_names": class_names,
            "layer_names": list(layers), "cushion": cushion_name,
            "threshold": [float(v) for v in wrapper.threshold.reshape(-1).tolist()], "detectors": detectors,
        },
        "data": {
            "fit": fit_info_out,
            "calibration": {"n": int(x_val.shape[0]), "source": val_source},
            "splits": {k: {"n": int(v[1].numel()), "class_counts": torch.bincount(v[1], minlength=num_classes).tolist(),
                           "subset_seed": None if cfg.max_eval is None else subset_seeds[k]}
                       for k, v in splits.items()},
        },
        "clean": clean_records,
        "detection": detection,
        "attacks": attack_records,
        "directions": directions,
        "layer_ablation": layer_ablation,
        "cushion_ablation": cushion_ablation,
        "stress_test": stress,
        "sanity": sanity,
        "figures": {},
        "notes": notes,
        "timing": timing,
    }
    if worst_case is not None:
        results["worst_case"] = worst_case
    if output_dir is not None:
        from .report import write_outputs

        results["timing"]["total"] = time.perf_counter() - t_start
        results = write_outputs(results, Path(output_dir), roc_scores, examples, figures=cfg.figures)
    else:
        results["timing"]["total"] = time.perf_counter() - t_start
        results = json_safe(results)
        validate_results(results)
    return results
