# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Worst-case adaptive evaluation of a defended classifier: one robust accuracy per eps that a reviewer can trust.

:func:`worst_case_evaluation` attacks the *whole deployed system* -- Cushion -> classifier -> Shield of the predicted
class -> accept / reject at the wrapper's own threshold -- with an ensemble of adaptive attacks, and counts an image
as **broken** when any attack finds, inside the L-inf ball, a point that the classifier gets wrong *and* the system
accepts. Following Carlini et al. 2019 ("On evaluating adversarial robustness"), Tramer et al. 2020 and Bryniarski
et al. 2022:

* **ensemble, worst case per image**: APGD on the joint objective (classifier margin + lam x detector margin, for
  several lam; step-size halving on plateaus), the paper's WB and WB_d, selective and orthogonal PGD; every attack
  keeps its best iterate by "fooled and accepted" (not its last one) and, separately, the fooled iterate with the
  highest detector margin (judged at the other thresholds). Attacks run AutoAttack-style on the images still
  unbroken, so the ensemble costs little once the system breaks;
* **every point is judged on the true system** (the Cushion's real forward, no proxy), and an image the classifier
  gets wrong and the system accepts with no perturbation at all is broken at every eps;
* **both BPDA proxies** through the Cushion (the identity and the smooth surrogate: kornia's differentiable JPEG,
  the unrolled Chambolle iterations of TVM); the worst case is over proxies too;
* **EOT** wherever the defence is random (detected by running it twice): gradients averaged over
  ``eot_samples`` draws, and a point counts as broken when the majority of ``judge_draws`` draws accept it wrongly;
* **gradient-free check**: the Square attack on the system's "fooled and accepted" margin, on the images the
  white-box ensemble left unbroken; an image it breaks means the white-box gradients were masked (reported and
  counted in the worst case);
* **convergence check**: the ensemble rerun with twice the steps and one more restart on a subset, at the eps where
  the curve is most informative; the robust accuracy must not drop by more than ``convergence_tolerance``;
* **robustness curve**: at each eps the system's robust accuracy (image rejected or still correctly classified),
  the attack success rates at fixed clean rejection rates (SR@5, SR@10: thresholds recalibrated on clean
  *validation* images to reject 5 % / 10 % of them; success over the clean images the classifier gets right), clean
  accuracy and acceptance, and the same curve for the undefended classifier (no Cushion, no Shield; APGD-CE and
  APGD-CW), so the defence's gain is the difference of two curves.

With ``carry_over`` (default) a point found at a smaller eps also counts at every larger one (it lies inside the
larger ball), so the curve is the worst case over every attack run at or below each eps; without it each eps is
attacked independently.

Threat model: white box -- the attacker knows the classifier, the Cushion, the Shield and its thresholds; L-inf
perturbations of at most eps in the [0, 1] intensity range; targeted to each other class.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import make_aegis_attack, make_attack
from ..metrics.detection import per_sample_threshold
from ..networks import AegisWrapper, calibrated_thresholds, cushion_from_config
from .config import SettingsMixin, attack_key, attack_spec, check_unique_labels
from .detection import other_class_targets
from .progress import Progress

__all__ = [
    "DEFAULT_WORST_CASE_EPS",
    "DETECTOR_ENSEMBLE",
    "UNDEFENDED_ENSEMBLE",
    "WorstCaseConfig",
    "curve_summary",
    "worst_case_evaluation",
]

#: the robustness curve's budgets (L-inf, in [0, 1] intensity units)
DEFAULT_WORST_CASE_EPS: tuple[float, ...] = (1 / 256, 2 / 256, 4 / 256, 8 / 256, 16 / 256)
#: the adaptive attacks on a system with a Shield, strongest first (APGD-Joint is expanded over ``lams``)
DETECTOR_ENSEMBLE: tuple[str, ...] = ("APGD-Joint", "WB", "SPGD", "OPGD", "WB_d")
#: the attacks on a classifier without Shield (the undefended reference, or a Cushion-only system)
UNDEFENDED_ENSEMBLE: tuple[str, ...] = ("APGD-CE", "APGD-CW")
_PROXIES = ("identity", "smooth")


_key = attack_key


@dataclass
class WorstCaseConfig(SettingsMixin):
    """Budgets of :func:`worst_case_evaluation`; build it from a plain dict with :meth:`from_dict`.

    Attributes:
        eps: the curve's L-inf budgets.
        attacks: the white-box ensemble against a system with a Shield (names or ``{"name", "label"?, **kwargs}``
            dicts); ``"APGD-Joint"`` given by name is run once per entry of ``lams``.
        undefended_attacks: the ensemble against classifiers without Shield.
        lams: detector-margin weights of APGD-Joint.
        steps: gradient steps of the APGD attacks (APGD-Joint, APGD-CE, APGD-CW), whose step-size control keeps
            using more steps productively. 400: with 200 the convergence check failed on the real chest X-rays
            (docs/evaluation.md).
        pgd_steps: gradient steps of the fixed-step attacks (WB, WB_d -- decaying at half --, SPGD, OPGD and any
            other); a spec's own ``"steps"`` wins over both.
        restarts: runs per attack (later runs attack only the images still unbroken).
        proxies: BPDA proxies of the Cushion to attack through: ``"identity"`` and/or ``"smooth"``.
        targets: ``"all"`` (every other class; the worst case) or ``"random"`` (one seeded other class per image).
        carry_over: a point found at a smaller eps counts at the larger ones (see the module docstring).
        eot_samples: gradient samples per step when the defence is random.
        judge_draws: draws judging one point on a random defence (majority vote).
        blackbox_eps: budgets at which the Square attack runs (``None``: every eps of the curve of at least 4/256;
            empty: never).
        blackbox_queries: Square's query budget per image; blackbox_p_init: its initial window fraction.
        convergence_eps: budget of the convergence check (``None``: the curve's eps whose robust accuracy is
            closest to 0.5, the larger on ties; it is always one of ``eps``).
        convergence_samples: images of the convergence subset (0: skip the check). 64: below 50 images one image
            is more than the default tolerance, and the check could only pass with no image changed.
        convergence_tolerance: largest accepted drop of robust accuracy (a fraction) under the stronger rerun.
        rejection_rates: clean rejection rates of the SR@q columns (thresholds calibrated on validation images).
        undefended: also compute the undefended classifier's curve.
        batch_size: images per attack batch.
        seed: seed of targets, random starts and the Square attack.
        progress: show a progress bar (tqdm).
    """

    eps: list[float] = field(default_factory=lambda: list(DEFAULT_WORST_CASE_EPS))
    attacks: list[Any] = field(default_factory=lambda: list(DETECTOR_ENSEMBLE))
    undefended_attacks: list[Any] = field(default_factory=lambda: list(UNDEFENDED_ENSEMBLE))
    lams: list[float] = field(default_factory=lambda: [0.3, 1.0])
    steps: int = 400
    pgd_steps: int = 50
    restarts: int = 1
    proxies: list[str] = field(default_factory=lambda: list(_PROXIES))
    targets: str = "all"
    carry_over: bool = True
    eot_samples: int = 8
    judge_draws: int = 9
    blackbox_eps: list[float] | None = None
    blackbox_queries: int = 1000
    blackbox_p_init: float = 0.8
    convergence_eps: float | None = None
    convergence_samples: int = 64
    convergence_tolerance: float = 0.02
    rejection_rates: list[float] = field(default_factory=lambda: [0.05, 0.10])
    undefended: bool = True
    batch_size: int = 64
    seed: int = 0
    progress: bool = False

    _WHAT = "worst-case setting"

    def __post_init__(self) -> None:
        self.eps = sorted(float(e) for e in self.eps)
        if not self.eps or any(not 0.0 < e <= 1.0 for e in self.eps):
            raise ValueError(f"eps must be a non-empty list of budgets in (0, 1], got {self.eps}.")
        if not self.attacks:
            raise ValueError("attacks must name at least one attack.")
        for name in ("steps", "pgd_steps", "restarts", "eot_samples", "judge_draws", "blackbox_queries", "batch_size"):
            v = getattr(self, name)
            if int(v) != v or int(v) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}.")
        bad = [p for p in self.proxies if p not in _PROXIES]
        if bad or not self.proxies:
            raise ValueError(f"proxies must be a non-empty list of {list(_PROXIES)}, got {self.proxies}.")
        if self.targets not in ("all", "random"):
            raise ValueError(f"targets must be 'all' or 'random', got {self.targets!r}.")
        if any(float(lam) <= 0 for lam in self.lams):
            raise ValueError(f"lams must be positive, got {self.lams}.")
        if any(not 0.0 < float(q) < 1.0 for q in self.rejection_rates):
            raise ValueError(f"rejection_rates must lie in (0, 1), got {self.rejection_rates}.")
        if int(self.convergence_samples) < 0:
            raise ValueError(f"convergence_samples must be >= 0, got {self.convergence_samples}.")
        if not 0.0 <= float(self.convergence_tolerance) < 1.0:
            raise ValueError(f"convergence_tolerance must lie in [0, 1), got {self.convergence_tolerance}.")
        if self.convergence_eps is not None and float(self.convergence_eps) not in self.eps:
            raise ValueError(f"convergence_eps {self.convergence_eps} is not one of the curve's eps {self.eps}.")
        if self.blackbox_eps is not None:
            self.blackbox_eps = sorted(float(e) for e in self.blackbox_eps)
            missing = [e for e in self.blackbox_eps if e not in self.eps]
            if missing:
                raise ValueError(f"blackbox_eps {missing} are not among the curve's eps {self.eps}.")

    def resolved_blackbox_eps(self) -> list[float]:
        if self.blackbox_eps is not None:
            return list(self.blackbox_eps)
        return [e for e in self.eps if e >= 4 / 256 - 1e-12]


# ------------------------------------------------------------------------------------------------------ parts
def _members(specs: Sequence[Any], lams: Sequence[float]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, registry name, kwargs)`` of each ensemble member; APGD-Joint by name is expanded over ``lams``."""
    out = []
    for spec in specs:
        label, name, kw = attack_spec(spec)
        if _key(name) == "apgdjoint" and "lam" not in kw:
            out += [(f"{label}(lam={lam:g})", name, {**kw, "lam": float(lam)}) for lam in lams]
        else:
            out.append((label, name, kw))
    check_unique_labels([m[0] for m in out])
    return out


def _proxy_cushions(cushion: nn.Module | None, proxies: Sequence[str], notes: list[str]) -> OrderedDict:
    """``{proxy name: cushion module to attack through}`` (``{"none": None}`` without a Cushion)."""
    if cushion is None:
        return OrderedDict(none=None)
    out: OrderedDict[str, nn.Module] = OrderedDict()
    for proxy in proxies:
        if getattr(cushion, "proxy_name", None) == proxy:
            out[proxy] = cushion
            continue
        get_config = getattr(cushion, "get_config", None)
        if get_config is None:
            notes.append(f"The Cushion {type(cushion).__name__} has no get_config(): it is attacked through its own "
                         f"backward only (the {proxy} proxy is skipped).")
            out.setdefault("own", cushion)
            continue
        try:
            out[proxy] = cushion_from_config({**get_config(), "proxy": proxy})
        except (ValueError, ImportError) as e:
            notes.append(f"The {proxy} BPDA proxy is not available for this Cushion and is skipped ({e}).")
    if not out:
        out["own"] = cushion
    return out


class _Judge:
    """Judges points on the true deployed system: ``broken[q]`` = misclassified and accepted at threshold set ``q``
    (majority over ``draws`` forward passes for a random defence)."""

    def __init__(self, wrapper: AegisWrapper, thresholds: Mapping[str, torch.Tensor | None], batch_size: int,
                 draws: int, device: torch.device) -> None:
        self.wrapper = wrapper
        self.thresholds = thresholds
        self.batch_size = batch_size
        self.draws = draws
        self.device = device

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(pred, Shield logit of the predicted class or None)`` of one draw, on CPU."""
        preds, scores = [], []
        for xb in x.split(self.batch_size):
            logits, feats = self.wrapper.forward_features(xb.to(self.device))
            pred = logits.argmax(1)
            preds.append(pred.cpu())
            if self.wrapper.shield is not None:
                s = self.wrapper.shield(feats).gather(1, pred[:, None])[:, 0]
                scores.append(s.float().cpu())
        return torch.cat(preds), (torch.cat(scores) if scores else None)

    def broken(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        votes = {q: torch.zeros(x.shape[0], dtype=torch.long) for q in self.thresholds}
        for _ in range(self.draws):
            pred, score = self.outputs(x)
            wrong = pred != y
            for q, thr in self.thresholds.items():
                ok = (torch.ones_like(wrong) if thr is None or score is None
                      else score >= per_sample_threshold(thr, pred))
                votes[q] += (wrong & ok).long()
        return {q: 2 * v > self.draws for q, v in votes.items()}


def _is_random(wrapper: AegisWrapper, x: torch.Tensor, device: torch.device) -> bool:
    """Whether two forward passes of the system on the same images differ (a random Cushion or Shield)."""
    with torch.no_grad():
        xb = x[:4].to(device)
        a, b = wrapper.forward_features(xb), wrapper.forward_features(xb)
        if not torch.equal(a[0], b[0]):
            return True
        if wrapper.shield is not None:
            return not torch.equal(wrapper.shield(a[1]), wrapper.shield(b[1]))
    return False


def _target_sets(y: torch.Tensor, num_classes: int, mode: str, seed: int) -> list[torch.Tensor]:
    if mode == "random" or num_classes == 2:
        return [other_class_targets(y, num_classes, seed)]
    return [(y + k) % num_classes for k in range(1, num_classes)]


def _mean(x: torch.Tensor) -> float | None:
    return float(x.float().mean()) if x.numel() else None


class _Worst:
    """Per-image broken flags per threshold set, with bookkeeping of what broke each image first."""

    def __init__(self, start: Mapping[str, torch.Tensor]) -> None:
        self.flags = {q: v.clone() for q, v in start.items()}

    def all_broken(self) -> torch.Tensor:
        return torch.stack(list(self.flags.values())).all(0)

    def update(self, idx: torch.Tensor, found: Mapping[str, torch.Tensor]) -> int:
        """Mark ``idx[found[q]]`` broken; returns how many images became newly broken at the deployed threshold."""
        before = int(self.flags["deployed"].sum())
        for q, f in found.items():
            self.flags[q][idx[f]] = True
        return int(self.flags["deployed"].sum()) - before

    def copy(self) -> _Worst:
        return _Worst(self.flags)


# ------------------------------------------------------------------------------------------------------ main
def worst_case_evaluation(
    wrapper: AegisWrapper,
    x: torch.Tensor,
    y: torch.Tensor,
    x_val: torch.Tensor | None = None,
    config: WorstCaseConfig | Mapping[str, Any] | None = None,
    device: Any = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The worst-case adaptive evaluation of ``wrapper`` on ``(x, y)``; see the module docstring.

    Args:
        wrapper: the deployed :class:`~monai_aegis.networks.AegisWrapper` (a Shield needs a threshold; a wrapper
            without Shield is evaluated as a classifier, behind its Cushion if it has one). Not modified.
        x, y: evaluation images ``(N, C, H, W)`` in [0, 1] and labels ``(N,)``.
        x_val: clean validation images for the SR@q thresholds (never the evaluation images); ``None``: no SR@q.
        config: a :class:`WorstCaseConfig` or a plain dict of its attributes.
        device: run here (default: the classifier's device).
        **overrides: attributes of :class:`WorstCaseConfig`.

    Returns:
        the ``worst_case`` record of one split (see ``docs/evaluation.md``): ``n``, ``clean``, ``thresholds``,
        ``curve``, ``members``, ``blackbox``, ``convergence``, ``undefended``, ``checks``, ``notes``, ``seconds``.

    Example::

        rec = worst_case_evaluation(wrapper, x_test, y_test, x_val, steps=50, eps=[4 / 256, 8 / 256])
        [(r["eps"] * 256, r["robust_accuracy"]) for r in rec["curve"]]
    """
    t_start = time.perf_counter()
    if isinstance(config, WorstCaseConfig):
        cfg = dataclasses.replace(config, **overrides) if overrides else config
    else:
        cfg = WorstCaseConfig.from_dict(config, **overrides)
    if not isinstance(wrapper, AegisWrapper):
        raise TypeError(f"wrapper must be an AegisWrapper, got {type(wrapper).__name__}.")
    has_shield = wrapper.shield is not None
    if has_shield and wrapper.threshold.numel() == 0:
        raise ValueError("the wrapper's Shield has no reject threshold: calibrate it on clean validation images first.")
    x = x.detach().float().cpu()
    y = y.detach().reshape(-1).long().cpu()
    if x.ndim != 4 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (N, C, H, W) batch matching y, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}.")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError("x must lie in [0, 1] (the attacks' budget is in intensity units).")
    dev = torch.device(device) if device is not None else next(wrapper.classifier.parameters()).device
    wrapper.eval()
    notes: list[str] = []
    n = int(y.numel())

    # ------------------------------------------------------------------ thresholds and clean outcome
    judge0 = _Judge(wrapper, {"deployed": None}, cfg.batch_size, 1, dev)
    with torch.no_grad():
        num_classes = int(wrapper(x[:1].to(dev)).shape[1])
    thresholds: OrderedDict[str, torch.Tensor | None] = OrderedDict()
    if has_shield:
        t = wrapper.threshold.detach().float().cpu()
        thresholds["deployed"] = t
        if x_val is not None and cfg.rejection_rates:
            vp, vs = judge0.outputs(x_val.detach().float().cpu())
            per_class = bool(wrapper.calibration.get("per_class", t.numel() > 1))
            for q in cfg.rejection_rates:
                thr, _ = calibrated_thresholds(vs, vp, num_classes, 1.0 - float(q), per_class)
                thresholds[_sr_key(q)] = thr
        elif cfg.rejection_rates:
            notes.append("No validation images were given: the SR@q columns (thresholds at fixed clean rejection "
                         "rates) are left out.")
    else:
        thresholds["deployed"] = None
    random_defence = _is_random(wrapper, x, dev)
    draws = cfg.judge_draws if random_defence else 1
    eot = cfg.eot_samples if random_defence else 1
    if random_defence:
        notes.append(f"The defence is random: attacks average gradients over {eot} draws (EOT) and a point counts as "
                     f"broken when a majority of {draws} draws misclassify and accept it.")
    judge = _Judge(wrapper, thresholds, cfg.batch_size, draws, dev)
    clean_broken = judge.broken(x, y)
    pred_c, score_c = judge.outputs(x)
    correct = pred_c == y
    clean: dict[str, Any] = {"accuracy": _mean(correct)}
    accepted_at: dict[str, float | None] = {}
    for q, thr in thresholds.items():
        acc = (torch.ones_like(correct) if thr is None or score_c is None
               else score_c >= per_sample_threshold(thr, pred_c))
        accepted_at[q] = _mean(acc)
    clean["accepted"] = accepted_at["deployed"]
    clean["accepted_at"] = accepted_at

    # ------------------------------------------------------------------ the system's ensemble
    cushions = _proxy_cushions(wrapper.cushion, cfg.proxies, notes)
    specs = cfg.attacks if has_shield else cfg.undefended_attacks
    members = _members(specs, cfg.lams)
    target_sets = _target_sets(y, num_classes, cfg.targets, cfg.seed)
    bb_eps = cfg.resolved_blackbox_eps()
    total = n * len(cfg.eps) * len(cushions) * len(members) * len(target_sets)
    bar = Progress(cfg.progress, total, "worst case")

    def run_member(name: str, kw: Mapping[str, Any], cushion: nn.Module | None, eps: float, worst: _Worst,
                   seed: int, step_factor: int, restarts: int, subset: torch.Tensor | None = None,
                   proxy: str = "", label: str = "") -> dict[str, Any]:
        """Run one ensemble member on the images ``worst`` leaves unbroken; returns its record (``members[]``)."""
        record: dict[str, Any] = {"eps": float(eps), "proxy": proxy, "attack": label, "n_run": 0, "n_broken": 0,
                                  "n_new": 0}
        t0 = time.perf_counter()
        for t in target_sets:
            active = ~worst.all_broken() & (t != y)
            if subset is not None:
                active &= subset
            idx = active.nonzero()[:, 0]
            record["n_run"] += int(idx.numel())
            if idx.numel() == 0:
                continue
            torch.manual_seed(seed)
            attack = _build(wrapper, name, kw, cushion, eps, step_factor * _steps_of(name, kw, cfg), restarts, eot,
                            has_shield)
            for chunk in idx.split(cfg.batch_size):
                xb, yb, tb = x[chunk].to(dev), y[chunk].to(dev), t[chunk].to(dev)
                res = attack(xb, yb, target=tb)
                found = judge.broken(res.x_adv.detach().cpu(), y[chunk])
                fooled_x = res.info.get("fooled_x")
                if fooled_x is not None:
                    alt = judge.broken(fooled_x.detach().cpu(), y[chunk])
                    found = {q: found[q] | alt[q] for q in found}
                new = worst.update(chunk, found)
                record["n_broken"] += int(found["deployed"].sum())
                record["n_new"] += new
                bar(int(chunk.numel()) if subset is None else 0)
        record["seconds"] = time.perf_counter() - t0
        return record

    curve: list[dict[str, Any]] = []
    member_records: list[dict[str, Any]] = []
    blackbox: list[dict[str, Any]] = []
    carried = _Worst(clean_broken)
    per_eps_flags: dict[float, _Worst] = {}
    for ei, eps in enumerate(cfg.eps):
        worst = carried.copy() if cfg.carry_over else _Worst(clean_broken)
        by_proxy: dict[str, float] = {}
        for pi, (proxy, cushion) in enumerate(cushions.items()):
            for mi, (label, name, kw) in enumerate(members):
                bar.set(f"worst case eps {eps * 256:g}/256 {proxy} {label}")
                member_records.append(run_member(name, kw, cushion, eps, worst,
                                                 cfg.seed + 7919 * ei + 104729 * pi + 31 * mi, 1, cfg.restarts,
                                                 proxy=proxy, label=label))
            by_proxy[proxy] = 1.0 - float(worst.flags["deployed"].float().mean())
        whitebox = worst.copy()
        n_bb = None
        if eps in bb_eps:
            t0 = time.perf_counter()
            bar.set(f"worst case eps {eps * 256:g}/256 Square")
            bb = _blackbox(wrapper, x, y, target_sets, worst, judge, eps, cfg, dev, has_shield)
            bb["seconds"] = time.perf_counter() - t0
            n_bb = bb["n_beats_whitebox"]
            blackbox.append(bb)
        robust = 1.0 - float(worst.flags["deployed"].float().mean())
        row: dict[str, Any] = {
            "eps": eps,
            "robust_accuracy": robust,
            "whitebox_robust_accuracy": 1.0 - float(whitebox.flags["deployed"].float().mean()),
            "robust_accuracy_by_proxy": by_proxy,
            "success_rate": _mean(worst.flags["deployed"][correct]),
            "sr": {q: _mean(worst.flags[q][correct]) for q in thresholds if q != "deployed"},
            "broken_by_blackbox_only": n_bb,
            "clean_accuracy": clean["accuracy"],
            "clean_accepted": clean["accepted"],
        }
        curve.append(row)
        per_eps_flags[eps] = worst
        if cfg.carry_over:
            carried = worst
    bar.close()

    # ------------------------------------------------------------------ undefended reference
    undefended: list[dict[str, Any]] = []
    if cfg.undefended:
        base = AegisWrapper(wrapper.classifier, amp=wrapper.amp)
        undefended = _undefended_curve(base, x, y, target_sets, cfg, dev)
        for row, ref in zip(curve, undefended):
            row["undefended_robust_accuracy"] = ref["robust_accuracy"]

    # ------------------------------------------------------------------ convergence
    convergence: list[dict[str, Any]] = []
    if cfg.convergence_samples > 0:
        eps_c = cfg.convergence_eps
        if eps_c is None:
            eps_c = min(curve, key=lambda r: (abs(r["robust_accuracy"] - 0.5), -r["eps"]))["eps"]
        g = torch.Generator().manual_seed(cfg.seed + 11)
        pick = torch.randperm(n, generator=g)[: min(n, cfg.convergence_samples)]
        subset = torch.zeros(n, dtype=torch.bool)
        subset[pick] = True
        base_worst = per_eps_flags[float(eps_c)]
        strong = base_worst.copy()
        restarts2 = cfg.restarts + 1
        t0 = time.perf_counter()
        strong_records: list[dict[str, Any]] = []
        for pi, (proxy, cushion) in enumerate(cushions.items()):
            for mi, (label, name, kw) in enumerate(members):
                strong_records.append(run_member(name, kw, cushion, float(eps_c), strong,
                                                 cfg.seed + 999 + 1000 * pi + mi, 2, restarts2, subset=subset,
                                                 proxy=proxy, label=label))
        base_ra = 1.0 - float(base_worst.flags["deployed"][subset].float().mean())
        strong_ra = 1.0 - float(strong.flags["deployed"][subset].float().mean())
        change = base_ra - strong_ra
        convergence.append({
            "eps": float(eps_c), "n": int(subset.sum()), "steps": 2 * cfg.steps, "pgd_steps": 2 * cfg.pgd_steps,
            "restarts": restarts2,
            "base_robust_accuracy": base_ra, "strong_robust_accuracy": strong_ra, "change": change,
            "passed": bool(change <= cfg.convergence_tolerance + 1e-9), "seconds": time.perf_counter() - t0,
            "members": strong_records,
        })

    # ------------------------------------------------------------------ checks
    checks: list[dict[str, Any]] = []
    for bb in blackbox:
        checks.append({
            "name": f"gradient-free Square ({bb['queries']} queries) breaks no image the white-box ensemble left "
                    f"robust at eps {bb['eps'] * 256:g}/256",
            "passed": bb["n_beats_whitebox"] == 0,
            "detail": f"Square broke {bb['n_broken']} of {bb['n_run']} white-box-robust images"
                      + ("" if bb["n_beats_whitebox"] == 0 else " -- the white-box gradients are masked"),
        })
    for c in convergence:
        checks.append({
            "name": f"converged: 2x steps + 1 restart lower robust accuracy by at most "
                    f"{100 * cfg.convergence_tolerance:g} points at eps {c['eps'] * 256:g}/256",
            "passed": c["passed"],
            "detail": f"{c['base_robust_accuracy']:.3f} -> {c['strong_robust_accuracy']:.3f} on {c['n']} images "
                      f"({c['steps']} / {c['pgd_steps']} steps, {c['restarts']} restarts)"
                      + "".join(f"; {m['attack']} ({m['proxy']}) broke {m['n_new']} more"
                                for m in c["members"] if m["n_new"])
                      + ("" if c["passed"] else " -- raise `steps` until the change is within tolerance"),
        })
    if len(cushions) > 1:
        first = next(iter(cushions))
        for row in curve:
            drop = row["robust_accuracy_by_proxy"][first] - row["whitebox_robust_accuracy"]
            if drop > 1e-9:
                notes.append(f"eps {row['eps'] * 256:g}/256: attacking through the "
                             f"{'/'.join(list(cushions)[1:])} proxy as well lowers robust accuracy by "
                             f"{100 * drop:.1f} points below the {first}-proxy figure: with the {first} proxy alone "
                             "the Cushion's benefit would be overstated by that much.")

    return {
        "n": n,
        "class_counts": torch.bincount(y, minlength=num_classes).tolist(),
        "random_defence": random_defence,
        "proxies": list(cushions),
        "attacks": [m[0] for m in members],
        "thresholds": {q: (None if t is None else per_sample_threshold(t, torch.arange(num_classes)).tolist())
                       for q, t in thresholds.items()},
        "clean": clean,
        "curve": curve,
        "members": member_records,
        "blackbox": blackbox,
        "convergence": convergence,
        "undefended": undefended,
        "checks": checks,
        "notes": notes,
        "seconds": time.perf_counter() - t_start,
    }


def _sr_key(q: float) -> str:
    return f"{100 * float(q):g}"


def _steps_of(name: str, kw: Mapping[str, Any], cfg: WorstCaseConfig) -> int:
    if "steps" in kw:
        return int(kw["steps"])
    return cfg.steps if _key(name).startswith("apgd") else cfg.pgd_steps


def _build(wrapper: AegisWrapper, name: str, kw: Mapping[str, Any], cushion: nn.Module | None, eps: float,
           steps: int, restarts: int, eot: int, has_shield: bool) -> Any:
    """One ensemble member against ``wrapper`` through ``cushion`` (a BPDA-proxy twin of the wrapper's Cushion)."""
    key = _key(name)
    args: dict[str, Any] = {"keep_best": True, "restarts": restarts, **{k: v for k, v in kw.items() if k != "steps"},
                            "eps": eps, "steps": steps}
    if eot > 1:
        args["eot_samples"] = eot
    if key == "wbd":
        args["decay_at"] = max(1, steps // 2)
    if has_shield:
        return make_aegis_attack(name, wrapper, preprocess=cushion, **args)
    return make_attack(name, wrapper.classifier, preprocess=cushion, amp=wrapper.amp, **args)


def _blackbox(wrapper: AegisWrapper, x: torch.Tensor, y: torch.Tensor, target_sets: Sequence[torch.Tensor],
              worst: _Worst, judge: _Judge, eps: float, cfg: WorstCaseConfig, dev: torch.device,
              has_shield: bool) -> dict[str, Any]:
    """Square on the images the white-box ensemble left unbroken (at the deployed threshold)."""
    robust_before = ~worst.flags["deployed"]
    n_run = n_broken = 0
    for k, t in enumerate(target_sets):
        idx = (~worst.flags["deployed"] & (t != y)).nonzero()[:, 0]
        n_run += int(idx.numel())
        if idx.numel() == 0:
            continue
        kw = {"eps": eps, "queries": cfg.blackbox_queries, "p_init": cfg.blackbox_p_init, "seed": cfg.seed + k}
        attack = make_aegis_attack("Square", wrapper, **kw) if has_shield else \
            make_attack("Square", wrapper.classifier, preprocess=wrapper.cushion, amp=wrapper.amp, **kw)
        for chunk in idx.split(cfg.batch_size):
            res = attack(x[chunk].to(dev), y[chunk].to(dev), target=t[chunk].to(dev))
            found = judge.broken(res.x_adv.detach().cpu(), y[chunk])
            n_broken += int(found["deployed"].sum())
            worst.update(chunk, found)
    beats = int((worst.flags["deployed"] & robust_before).sum())
    return {"eps": eps, "queries": cfg.blackbox_queries, "n_run": n_run, "n_broken": n_broken,
            "n_beats_whitebox": beats}


def _undefended_curve(base: AegisWrapper, x: torch.Tensor, y: torch.Tensor, target_sets: Sequence[torch.Tensor],
                      cfg: WorstCaseConfig, dev: torch.device) -> list[dict[str, Any]]:
    """Robust accuracy of the bare classifier (no Cushion, no Shield) under the undefended ensemble."""
    judge = _Judge(base, {"deployed": None}, cfg.batch_size, 1, dev)
    members = _members(cfg.undefended_attacks, cfg.lams)
    start = judge.broken(x, y)
    accuracy = 1.0 - float(start["deployed"].float().mean())
    carried = _Worst(start)
    out = []
    for ei, eps in enumerate(cfg.eps):
        worst = carried.copy() if cfg.carry_over else _Worst(start)
        for mi, (label, name, kw) in enumerate(members):
            for t in target_sets:
                idx = (~worst.flags["deployed"] & (t != y)).nonzero()[:, 0]
                if idx.numel() == 0:
                    continue
                torch.manual_seed(cfg.seed + 7919 * ei + 31 * mi)
                attack = _build(base, name, kw, None, eps, _steps_of(name, kw, cfg), cfg.restarts, 1, False)
                for chunk in idx.split(cfg.batch_size):
                    res = attack(x[chunk].to(dev), y[chunk].to(dev), target=t[chunk].to(dev))
                    worst.update(chunk, judge.broken(res.x_adv.detach().cpu(), y[chunk]))
        out.append({"eps": eps, "robust_accuracy": 1.0 - float(worst.flags["deployed"].float().mean()),
                    "accuracy": accuracy})
        if cfg.carry_over:
            carried = worst
    return out


def curve_summary(record: Mapping[str, Any]) -> str:
    """One line per eps of a worst-case record: ``eps 8/256: robust 0.79 (undefended 0.05), SR@5 ...``."""
    lines = []
    for row in record["curve"]:
        parts = [f"eps {row['eps'] * 256:g}/256: robust accuracy {row['robust_accuracy']:.3f}"]
        if row.get("undefended_robust_accuracy") is not None:
            parts.append(f"undefended {row['undefended_robust_accuracy']:.3f}")
        for q, v in row.get("sr", {}).items():
            parts.append(f"SR@{q} {'n/a' if v is None else f'{v:.3f}'}")
        lines.append(", ".join(parts))
    return "\n".join(lines)

