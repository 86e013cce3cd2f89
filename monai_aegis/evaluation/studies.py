# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The runner's studies beyond the main tables: the layer ablation, the Cushion ablation and the sanity checks
against gradient masking."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..metrics import tpr_key
from ..networks import AegisWrapper, resolve_cushion
from .detection import detection_metrics, other_class_targets
from .progress import Progress
from .settings import (
    BASELINE_DETECTORS,
    SHIELD_ATTACKS,
    EvaluationConfig,
    _key,
    _spec,
    default_layer_subsets,
)
from .system import AttackFactory, DefendedSystem, craft, mean_of, robust_of, subsample

__all__ = ["cushion_ablation_study", "layer_ablation_study", "sanity_study"]


def layer_ablation_study(
    system: DefendedSystem,
    data: tuple[torch.Tensor, torch.Tensor],
    split: str,
    attacks: Sequence[Any],
    keep_adv: Mapping[tuple[str, str, str], torch.Tensor],
    factory: AttackFactory,
    cfg: EvaluationConfig,
    baselines: Sequence[str],
    shield_variants: Mapping[str, AegisWrapper] | None,
    notes: list[str],
    num_classes: int,
) -> list[dict[str, Any]]:
    """Detection with subsets of the hooked layers, on the adversarial images of the main tables."""
    if not attacks:
        return []
    x, y = data
    subsets = OrderedDict(cfg.layer_subsets) if cfg.layer_subsets else default_layer_subsets(system.layers)
    for name, sub in subsets.items():
        unknown = [n for n in sub if n not in system.layers]
        if unknown:
            raise ValueError(f"layer subset {name!r} names layers {unknown} outside the hooked layers {list(system.layers)}.")
    t = other_class_targets(y, num_classes, cfg.seed)
    clean = system.score(x, [], keep_features=True)
    correct = clean.pred == y
    # per subset: the baselines refitted on the subset's layers (DNN: sum of its independently trained per-layer heads)
    sub_dets: dict[str, dict[str, Any]] = {}
    for sname, sub in subsets.items():
        dets: dict[str, Any] = {}
        for b in baselines:
            if b not in system.baselines:
                continue
            if b == "dnn":
                dets[b] = ("layers", system.baselines[b], list(sub))
                continue
            cls, defaults, supervised = BASELINE_DETECTORS[b]
            det = cls(**{**defaults, **cfg.detector_kwargs.get(b, {})})
            assert system.fit_features is not None and system.fit_labels is not None
            feats = OrderedDict((n, system.fit_features[n]) for n in sub)
            if b in ("kd", "maha"):
                det.fit(feats, system.fit_labels, num_classes=num_classes)
            else:
                assert system.fit_adv_features is not None
                det.fit(feats, adversarial=OrderedDict((n, system.fit_adv_features[n]) for n in sub))
            dets[b] = ("fitted", det, list(sub))
        sub_dets[sname] = dets
    variants = dict(shield_variants or {})
    unknown = [k for k in variants if k not in subsets]
    if unknown:
        raise ValueError(f"shield_variants keys {unknown} are not layer subsets ({list(subsets)}).")
    records = []
    for spec in attacks:
        label = _spec(spec)[0]
        x_adv = keep_adv.get((split, system.label, label))
        if x_adv is None:  # not among the main attacks: craft it here
            _, attack = factory.build(spec, system)
            x_adv = craft(attack, x, y, t, cfg.batch_size, system.device)
        adv = system.score(x_adv, [], keep_features=True)
        success = (adv.pred == t) & correct
        for sname, sub in subsets.items():
            rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for b, (kind, det, names) in sub_dets[sname].items():
                if kind == "layers":
                    c = torch.stack([v for k, v in det.score_layers(clean.features, clean.pred).items() if k in names]).sum(0)
                    a = torch.stack([v for k, v in det.score_layers(adv.features, adv.pred).items() if k in names]).sum(0)
                else:
                    fc = OrderedDict((n, clean.features[n]) for n in names)
                    fa = OrderedDict((n, adv.features[n]) for n in names)
                    c, a = det.score(fc, clean.pred), det.score(fa, adv.pred)
                rows[b] = (c.float().cpu(), a.float().cpu())
            if sname in variants or (sname == "all" and tuple(sub) == tuple(system.wrapper.layer_names)
                                     and system.wrapper.shield is not None):
                w = variants.get(sname, system.wrapper)
                rows = {"shield": shield_scores_of(w, x, x_adv, cfg, system.device), **rows}
            for b, (c, a) in rows.items():
                m = detection_metrics(c, a, correct, success, cfg.tnr)
                records.append({"split": split, "attack": label, "subset": sname, "layers": list(sub), "detector": b,
                                "auroc": m["auroc"], "tpr": m[tpr_key(cfg.tnr)]})
    if not variants:
        notes.append("Layer ablation: the baselines are refitted on each subset; the Shield is evaluated with all "
                      "layers only (pass shield_variants= with Shields trained on subsets to add them).")
    return records


@torch.no_grad()
def shield_scores_of(w: AegisWrapper, x: torch.Tensor, x_adv: torch.Tensor, cfg: EvaluationConfig,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for data in (x, x_adv):
        scores = [w.screen(xb.to(device), check_input=False)["score"].cpu() for xb in data.split(cfg.batch_size)]
        out.append(torch.cat(scores))
    return out[0], out[1]


def cushion_ablation_study(
    wrapper: AegisWrapper,
    data: tuple[torch.Tensor, torch.Tensor],
    split: str,
    x_val: torch.Tensor,
    factory: AttackFactory,
    cfg: EvaluationConfig,
    device: torch.device,
    layers: Sequence[str],
    num_classes: int,
) -> list[dict[str, Any]]:
    """The Shield system with each Cushion preset (threshold re-calibrated on validation images)."""
    if not cfg.cushion_ablation or not cfg.cushion_ablation_attacks:
        return []
    x, y = data
    t = other_class_targets(y, num_classes, cfg.seed)
    records = []
    bar = Progress(cfg.progress, x.shape[0] * len(cfg.cushion_ablation) * len(cfg.cushion_ablation_attacks),
                    "cushion ablation")
    for cname in cfg.cushion_ablation:
        cushion = resolve_cushion(cname)
        w = AegisWrapper(wrapper.classifier, wrapper.shield, cushion=cushion, amp=wrapper.amp)
        w.calibrate(x_val, tnr=cfg.tnr, batch_size=cfg.batch_size)
        system = DefendedSystem(cname, w, layers, cfg, device)
        clean = system.score(x, ["shield"])
        correct = clean.pred == y
        for spec in cfg.cushion_ablation_attacks:
            label, attack = factory.build(spec, system)
            bar.set(f"cushion ablation {cname}/{label}")
            x_adv = craft(attack, x, y, t, cfg.batch_size, device, bar)
            adv = system.score(x_adv, ["shield"])
            success = (adv.pred == t) & correct
            m = detection_metrics(clean.scores["shield"], adv.scores["shield"], correct, success, cfg.tnr)
            records.append({
                "split": split, "cushion": cname, "attack": label, "clean_accuracy": mean_of(correct),
                "clean_accepted": mean_of(clean.accept["shield"]), "success_rate": mean_of(success[correct]),
                "undetected_success": mean_of((success & adv.accept["shield"])[correct]), "auroc": m["auroc"],
                "tpr": m[tpr_key(cfg.tnr)],
                "robust_accuracy": robust_of(adv.accept["shield"], adv.pred, y),
            })
    bar.close()
    return records


def sanity_study(
    system: DefendedSystem,
    data: tuple[torch.Tensor, torch.Tensor],
    attack_records: Sequence[Mapping[str, Any]],
    split: str,
    mode: str,
    factory: AttackFactory,
    cfg: EvaluationConfig,
    device: torch.device,
    num_classes: int,
) -> dict[str, Any]:
    """Eps sweep (success must rise with eps and reach ~100 % unbounded) and white-box vs transfer success."""
    sweep, checks = [], []
    attacks = [a for a in cfg.sanity_attacks
               if system.wrapper.shield is not None or _key(_spec(a)[1]) not in SHIELD_ATTACKS]
    if cfg.sanity_eps and attacks and cfg.sanity_samples > 0:
        x, y = subsample(*data, cfg.sanity_samples, cfg.seed + 5)
        t = other_class_targets(y, num_classes, cfg.seed)
        correct = system.score(x, []).pred == y
        eps_list = sorted(float(e) for e in cfg.sanity_eps)
        bar = Progress(cfg.progress, x.shape[0] * len(eps_list) * len(attacks), "sanity checks")
        for spec in attacks:
            label = _spec(spec)[0]
            rows = []
            base_steps = factory.kwargs(spec, system)[2].get("steps")
            for eps in eps_list:
                extra: dict[str, Any] = {"eps": eps}
                if base_steps and eps > cfg.eps:  # keep the step size of the main budget: more steps, not bigger ones
                    extra["steps"] = int(min(cfg.sanity_max_steps, math.ceil(base_steps * eps / cfg.eps)))
                _, attack = factory.build(spec, system, **extra)
                bar.set(f"sanity {label} eps {eps * 256:g}/256")
                x_adv = craft(attack, x, y, t, cfg.batch_size, device, bar)
                adv = system.score(x_adv, ["shield"])
                success = (adv.pred == t) & correct
                acc = adv.accept.get("shield", torch.ones_like(success))
                row = {"attack": label, "eps": eps, "success_rate": mean_of(success[correct]),
                       "undetected_success": mean_of((success & acc)[correct])}
                rows.append(row)
            sweep += rows
            succ = [r["success_rate"] for r in rows]
            mono = all(b >= a - 0.05 for a, b in zip(succ, succ[1:]))
            checks.append({"name": f"{label}: success rises with eps", "passed": bool(mono),
                           "detail": ", ".join(f"{r['eps'] * 256:g}/256: {r['success_rate']:.2f}" for r in rows)})
            top = rows[-1]
            metric = "undetected_success" if _key(_spec(spec)[1]) in SHIELD_ATTACKS else "success_rate"
            checks.append({
                "name": f"{label}: ~100% {metric.replace('_', ' ')} at eps {top['eps'] * 256:g}/256",
                "passed": bool(top[metric] >= 0.95),
                "detail": f"{top[metric]:.3f} (success {top['success_rate']:.3f}, undetected {top['undetected_success']:.3f})",
            })
        bar.close()
    by_attack = {(r["split"], r["cushion"], _key(r["attack"])): r for r in attack_records}
    wb, tf = by_attack.get((split, mode, "pgd")), by_attack.get((split, mode, "tf"))
    if wb is not None and tf is not None:
        ok = None if math.isnan(wb["success_rate"]) or math.isnan(tf["success_rate"]) else \
            bool(wb["success_rate"] >= tf["success_rate"])
        checks.append({"name": "white-box PGD success >= transfer (TF) success", "passed": ok,
                       "detail": f"PGD {wb['success_rate']:.3f} vs TF {tf['success_rate']:.3f} ({split}, {mode})"})
    return {"eps_sweep": sweep, "checks": checks}
