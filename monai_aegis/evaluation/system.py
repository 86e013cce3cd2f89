# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The defended system the runner attacks and scores: classifier + Cushion + Shield + baseline detectors on one
batched hooked forward pass, the attack factory that crafts every attack once, baseline fitting and
calibration."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import make_aegis_attack, make_attack
from ..metrics import accept_mask, threshold_at_tnr
from ..networks import AegisWrapper, Shield, hooked_batches
from .detection import other_class_targets
from .progress import Progress
from .settings import (
    ADAPTIVE_ATTACKS,
    BASELINE_DETECTORS,
    SHIELD_ATTACKS,
    EvaluationConfig,
    _key,
    _spec,
)

__all__ = ["AttackFactory", "DefendedSystem", "Scored", "calibrate_detectors", "craft", "fit_baselines", "mean_of",
           "robust_of", "subsample"]


# ------------------------------------------------------------------------------------------------------ data
def subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n <= 0 or n >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx]


# ------------------------------------------------------------------------------------------------------ systems
@dataclass
class Scored:
    """Classifier output and detector scores of a set of images (CPU tensors)."""

    pred: torch.Tensor
    scores: dict[str, torch.Tensor]
    accept: dict[str, torch.Tensor]
    features: OrderedDict[str, torch.Tensor] | None = None


class DefendedSystem:
    """One defended configuration: the classifier behind a Cushion (or none), its Shield with a threshold, and the
    fitted baselines with thresholds."""

    def __init__(self, label: str, wrapper: AegisWrapper, layers: Sequence[str], cfg: EvaluationConfig,
                 device: torch.device) -> None:
        self.label = label
        self.wrapper = wrapper
        self.layers = tuple(layers)
        self.cfg = cfg
        self.device = device
        self.baselines: dict[str, Any] = {}
        self.thresholds: dict[str, float] = {}
        self.fit_features: OrderedDict[str, torch.Tensor] | None = None
        self.fit_labels: torch.Tensor | None = None
        self.fit_adv_features: OrderedDict[str, torch.Tensor] | None = None
        self._feature_model: Any = None

    @property
    def classifier(self) -> nn.Module:
        return self.wrapper.classifier

    @property
    def cushion(self) -> nn.Module | None:
        return self.wrapper.cushion

    def hooked(self) -> tuple[str, ...]:
        names = list(self.layers)
        for n in self.wrapper.layer_names:
            if n not in names:
                names.append(n)
        return tuple(names)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, keep: Sequence[str] = ()) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                         OrderedDict[str, torch.Tensor]]:
        """Batched ``(logits, shield logits or None, features of ``keep``)`` on CPU."""
        names = self.hooked()
        logits, shield, feats = [], [], OrderedDict((n, []) for n in keep)
        for out, f in hooked_batches(self.classifier, x, names, self.wrapper.preprocess, self.cfg.batch_size,
                                     self.device, amp=self.wrapper.amp):
            logits.append(out.cpu())
            if self.wrapper.shield is not None:
                shield.append(self.wrapper.shield(OrderedDict((n, f[n]) for n in self.wrapper.layer_names)).cpu())
            for n in keep:
                feats[n].append(f[n].cpu())
        return (torch.cat(logits), torch.cat(shield) if shield else None,
                OrderedDict((n, torch.cat(v)) for n, v in feats.items()))

    def score(self, x: torch.Tensor, detectors: Sequence[str], keep_features: bool = False) -> Scored:
        need = bool(set(detectors) & set(self.baselines)) or keep_features
        logits, shield_logits, feats = self.forward(x, self.layers if need else ())
        pred = logits.argmax(1)
        scores: dict[str, torch.Tensor] = {}
        accept: dict[str, torch.Tensor] = {}
        for d in detectors:  # one convention: score higher = more adversarial, accept iff score <= threshold
            if d == "shield" and shield_logits is not None:
                scores[d], thr = Shield.score(shield_logits, pred), self.wrapper.score_threshold.cpu()
            elif d in self.baselines:
                scores[d], thr = self.baselines[d].score(feats, pred).float().cpu(), self.thresholds.get(d, math.inf)
            else:
                continue
            accept[d] = accept_mask(scores[d], thr, pred)
        return Scored(pred, scores, accept, feats if keep_features else None)

    def feature_model(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        """The HFC attack's Gaussian feature model, fitted once on pooled clean training features."""
        if self._feature_model is None:
            from ..attacks import GaussianFeatureModel, extract_pooled_features

            feats = extract_pooled_features(self.classifier, x.to(self.device), self.wrapper.layer_names or self.layers,
                                            preprocess=self.cushion, batch_size=self.cfg.batch_size)
            self._feature_model = GaussianFeatureModel.fit(feats, y, reg_covar=1e-3).to(self.device)
        return self._feature_model


# ------------------------------------------------------------------------------------------------------ attacks
class AttackFactory:
    """Builds named attacks against a system with the evaluation's budgets and context (guides, substitute, ...)."""

    def __init__(self, cfg: EvaluationConfig, guides: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
                 substitute: nn.Module | None) -> None:
        self.cfg = cfg
        self.guides = guides
        self.train = train
        self.substitute = substitute

    def kwargs(self, spec: Any, system: DefendedSystem, **extra: Any) -> tuple[str, str, dict[str, Any]]:
        label, name, kw = _spec(spec)
        key = _key(name)
        cfg = self.cfg
        out: dict[str, Any] = {}
        if key == "cwl2":
            out.update(binary_search_steps=cfg.cw_binary_search_steps, steps=cfg.cw_steps)
        elif key not in ("pgdl2",):
            out["eps"] = cfg.eps
        if key in ADAPTIVE_ATTACKS:
            out["steps"] = cfg.adaptive_steps
            if key == "wbd":
                out["decay_at"] = max(1, cfg.adaptive_steps // 2)
        elif key not in ("fgsm", "cwl2"):
            out["steps"] = cfg.conventional_steps
        if key == "fea":
            out.update(guides=self.guides.to(system.device), layer_names=system.wrapper.layer_names or system.layers)
        elif key == "hfc":
            out["feature_model"] = system.feature_model(*self.train)
        elif key == "tf":
            if self.substitute is None:
                raise ValueError("the transfer attack 'TF' needs a substitute model (run_evaluation(substitute=...)).")
            out["source_model"] = self.substitute
        out.update(kw)
        out.update(extra)
        out.update(cfg.attack_kwargs.get(label, {}))
        return label, name, out

    def build(self, spec: Any, system: DefendedSystem, **extra: Any) -> tuple[str, Any]:
        label, name, kw = self.kwargs(spec, system, **extra)
        if system.wrapper.shield is not None and system.wrapper.threshold.numel():
            return label, make_aegis_attack(name, system.wrapper, **kw)
        if _key(name) in SHIELD_ATTACKS:
            raise ValueError(f"{label} attacks the Shield; the wrapper has none.")
        return label, make_attack(name, system.classifier, preprocess=system.cushion, amp=system.wrapper.amp, **kw)


def craft(attack: Any, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, batch_size: int, device: torch.device,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    out = []
    for xb, yb, tb in zip(x.split(batch_size), y.split(batch_size), t.split(batch_size)):
        res = attack(xb.to(device), yb.to(device), target=tb.to(device))
        out.append(getattr(res, "x_adv", res).detach().cpu())
        if progress is not None:
            progress(xb.shape[0])
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------------ helpers
def mean_of(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else float("nan")


def fit_baselines(
    system: DefendedSystem,
    names: Sequence[str],
    x: torch.Tensor,
    y: torch.Tensor,
    factory: AttackFactory,
    cfg: EvaluationConfig,
    notes: list[str],
    bar: Progress,
) -> dict[str, Any]:
    """Fit the baselines of ``system`` on clean (and, for LID/DNN, adversarial) training features."""
    info: dict[str, Any] = {"n": int(x.shape[0]), "n_adversarial": 0, "fit_attack": cfg.fit_attack}
    logits, _, feats = system.forward(x, system.layers)
    correct = logits.argmax(1) == y
    adv_feats = None
    if any(BASELINE_DETECTORS[n][2] for n in names):
        kw = {"eps": cfg.eps, "steps": cfg.conventional_steps, **cfg.fit_attack_kwargs}
        if _key(cfg.fit_attack) == "fgsm":
            kw.pop("steps")
        attack = make_attack(cfg.fit_attack, system.classifier, preprocess=system.cushion, amp=system.wrapper.amp,
                             **kw)
        t = other_class_targets(y, logits.shape[1], cfg.seed + 7)
        bar.set(f"fit attack ({system.label})")
        x_adv = craft(attack, x, y, t, cfg.batch_size, system.device, bar)
        adv_logits, _, adv_all = system.forward(x_adv, system.layers)
        keep = correct & (adv_logits.argmax(1) == t)
        info["n_adversarial"] = int(keep.sum())
        if int(keep.sum()) >= 2:
            adv_feats = OrderedDict((n, f[keep]) for n, f in adv_all.items())
            system.fit_adv_features = adv_feats
        else:
            notes.append(f"{system.label}: the fit attack {cfg.fit_attack} succeeded on {int(keep.sum())} training "
                         "images; LID and DNN are skipped.")
    clean_feats = OrderedDict((n, f[correct]) for n, f in feats.items())
    system.fit_features, system.fit_labels = clean_feats, y[correct]
    for name in names:
        cls, defaults, supervised = BASELINE_DETECTORS[name]
        if supervised and adv_feats is None:
            continue
        det = cls(**{**defaults, **cfg.detector_kwargs.get(name, {})})
        try:
            if name in ("kd", "maha"):
                det.fit(clean_feats, y[correct], num_classes=logits.shape[1])
            else:
                det.fit(clean_feats, adversarial=adv_feats)
        except ValueError as e:  # e.g. a class without correctly classified training images
            notes.append(f"{system.label}: {name.upper()} could not be fitted and is skipped ({e})")
            continue
        system.baselines[name] = det
    return info


def calibrate_detectors(
    system: DefendedSystem,
    x_val: torch.Tensor,
    cfg: EvaluationConfig,
    recalibrate_shield: bool,
) -> None:
    if recalibrate_shield and system.wrapper.shield is not None:
        system.wrapper.calibrate(x_val, tnr=cfg.tnr, batch_size=cfg.batch_size)
    if system.baselines:
        scored = system.score(x_val, list(system.baselines))
        for name in system.baselines:
            system.thresholds[name] = threshold_at_tnr(scored.scores[name], cfg.tnr)


def robust_of(accept: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> float:
    return mean_of(~accept | (pred == y))
