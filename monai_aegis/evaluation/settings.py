# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The settings of the evaluation runner (:class:`EvaluationConfig`) and the attack / detector lists it draws
from."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..attacks import DEFAULT_EPS_LINF
from ..detectors import (
    DNNDetector,
    KernelDensityDetector,
    LIDDetector,
    MahalanobisDetector,
)
from .config import SettingsMixin, attack_key, attack_spec, check_unique_labels
from .worst_case import DEFAULT_WORST_CASE_EPS, WorstCaseConfig

__all__ = [
    "ADAPTIVE_ATTACKS",
    "BASELINE_DETECTORS",
    "DEFAULT_ATTACKS",
    "DETECTOR_NAMES",
    "HFC_STRENGTHENED",
    "PAPER_PROTOCOL",
    "SHIELD_ATTACKS",
    "EvaluationConfig",
    "default_layer_subsets",
]

#: the paper's attack list (Tables 3-4): conventional, transfer, feature-space and adaptive attacks (+ SPGD, OPGD)
DEFAULT_ATTACKS: tuple[str, ...] = (
    "FGSM", "BIM", "PGD", "MIM", "DIM", "TIM", "CW-Linf", "PGD-L2", "CW-L2", "TF", "Fea", "HFC", "WB", "WB_d", "SPGD",
    "OPGD",
)
#: the paper's Table 2 attacks: MIM, BIM and CW-Linf strengthened by the HFC feature prior (``HFC`` itself is PGD
#: with the prior, Table 2's PGD column); adaptive, so they take ``adaptive_steps``
HFC_STRENGTHENED: tuple[dict[str, Any], ...] = (
    {"name": "HFC", "label": "HFC-MIM", "random_start": False, "step_rule": "momentum"},
    {"name": "HFC", "label": "HFC-BIM", "random_start": False},
    {"name": "HFC", "label": "HFC-CW-Linf", "loss": "cw"},
)
#: settings that complete every cell of the paper's Tables 2-5 a run can measure (a dict for
#: ``EvaluationConfig.from_dict``; merge it under your own): the Table 2 attacks, and the layer / Cushion ablations on
#: Table 5's attacks. Table 5's per-layer Shields must be trained and passed as ``shield_variants``.
PAPER_PROTOCOL: dict[str, Any] = {
    "attacks": [*DEFAULT_ATTACKS, *HFC_STRENGTHENED],
    "layer_ablation_attacks": ["PGD", "CW-Linf", "HFC", "WB"],
    "cushion_ablation_attacks": ["PGD", "Fea", "HFC", "WB"],
}
#: registry keys of the attacks that get ``adaptive_steps`` (the others ``conventional_steps``)
ADAPTIVE_ATTACKS: tuple[str, ...] = ("fea", "hfc", "wb", "wbd", "spgd", "opgd")
SHIELD_ATTACKS = ("wb", "wbd", "spgd", "opgd")
#: baseline detector name -> (class, default constructor arguments, needs adversarial training features)
BASELINE_DETECTORS: dict[str, tuple[type, dict[str, Any], bool]] = {
    "kd": (KernelDensityDetector, {"bandwidth": "median"}, False),
    "lid": (LIDDetector, {"k": 20, "batch_size": 100}, True),
    "maha": (MahalanobisDetector, {"covariance": "ledoit_wolf"}, False),
    "dnn": (DNNDetector, {"epochs": 20}, True),
}
DETECTOR_NAMES = ("shield", *BASELINE_DETECTORS)


_key = attack_key
_spec = attack_spec


@dataclass
class EvaluationConfig(SettingsMixin):
    """Everything :func:`run_evaluation` can be told; build it from a plain dict with :meth:`from_dict`.

    Attributes:
        attacks: attack names (see :func:`~monai_aegis.attacks.make_attack`) or dicts ``{"name": ..., "label":
            ..., **kwargs}`` (e.g. ``{"name": "PGD", "label": "PGD-8", "eps": 0.03125}``).
        detectors: any of ``"shield"``, ``"kd"``, ``"lid"``, ``"maha"``, ``"dnn"``.
        cushion_modes: ``"with"`` (the wrapper's Cushion, attacked with BPDA) and/or ``"without"``.
        eps: L-inf budget of the L-inf attacks (L2 attacks keep their own default, 8/256, unless overridden).
        conventional_steps: steps of FGSM-family / PGD-family / transfer attacks (FGSM always takes 1).
        adaptive_steps: steps of Fea, HFC, WB, WB_d (decay at half), SPGD, OPGD.
        cw_binary_search_steps, cw_steps: CW-L2 constants tried and Adam steps per constant.
        attack_kwargs: per attack label, extra keyword arguments (win over everything else).
        tnr: the true-negative rate of TPR and of the acceptance thresholds.
        batch_size: images per batch in every loop.
        max_eval: images per evaluation split (a seeded random subset; ``None``: all). The i-th split of
            ``eval_data`` draws with ``seed + i``, so a split evaluated alone gets the images it got as the i-th
            split with ``seed`` set to ``seed + i`` (``results.json`` records each split's ``subset_seed``).
        n_fit: training images used to fit the baselines (seeded random subset).
        fit_attack, fit_attack_kwargs: the attack crafting the adversarial training features of LID and DNN.
        detector_kwargs: per baseline, constructor arguments (override :data:`BASELINE_DETECTORS` defaults).
        layers: hooked layers of the baselines (default: the wrapper's, i.e. the Shield's).
        layer_subsets: ``{name: [layers]}`` for the layer ablation (default :func:`default_layer_subsets`).
        layer_ablation_attacks: attacks of the layer ablation (empty: skip it).
        cushion_ablation: Cushion presets of the Cushion ablation (empty: skip it).
        cushion_ablation_attacks: attacks of the Cushion ablation.
        ablation_split: split of both ablations, the stress test and the sanity checks (default: the first).
        stress_eps, stress_steps, stress_samples: the stress test (``stress_samples=0``: skip it).
        sanity_eps, sanity_attacks, sanity_samples: the eps sweep of the sanity checks (empty: skip it);
            1.0 is the unbounded attack.
        sanity_max_steps: above the main ``eps``, the sweep's attacks take ``steps x eps / main eps`` steps (at most
            this many) so that their step size stays that of the main budget: a few huge sign steps through a
            Cushion's BPDA oscillate and would fail the "unbounded reaches ~100 %" check for the wrong reason.
        class_names: names of the classes (for the per-direction tables).
        n_examples: images in the example figure.
        example_attacks: attacks shown in the example figure (default: up to three of PGD, CW-L2, WB).
        seed: seed of subsets, targets and attacks' random starts.
        progress: show progress bars (tqdm, when installed).
        figures: write PNG figures (matplotlib, Agg backend).
        device: run on this device (default: the classifier's).
        worst_case: settings of the worst-case adaptive evaluation (a dict of
            :class:`~monai_aegis.evaluation.worst_case.WorstCaseConfig` attributes; ``{}`` for its defaults), or
            ``None`` to skip it. Its ``seed``, ``batch_size`` and ``progress`` default to the ones above.
        worst_case_splits: evaluation splits of the worst-case evaluation (default: all).
    """

    attacks: list[Any] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    detectors: list[str] = field(default_factory=lambda: list(DETECTOR_NAMES))
    cushion_modes: list[str] = field(default_factory=lambda: ["with", "without"])
    eps: float = DEFAULT_EPS_LINF
    conventional_steps: int = 20
    adaptive_steps: int = 100
    cw_binary_search_steps: int = 6
    cw_steps: int = 200
    attack_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tnr: float = 0.9
    batch_size: int = 64
    max_eval: int | None = None
    n_fit: int = 512
    fit_attack: str = "PGD"
    fit_attack_kwargs: dict[str, Any] = field(default_factory=dict)
    detector_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    layers: list[str] | None = None
    layer_subsets: dict[str, list[str]] | None = None
    layer_ablation_attacks: list[str] = field(default_factory=lambda: ["PGD"])
    cushion_ablation: list[str] = field(
        default_factory=lambda: ["identity", "jpeg90", "jpeg80", "jpeg70", "bit_depth5", "bit_depth4", "tvm"]
    )
    cushion_ablation_attacks: list[str] = field(default_factory=lambda: ["PGD", "WB"])
    ablation_split: str | None = None
    stress_eps: float = DEFAULT_EPS_LINF
    stress_steps: int = 20
    stress_samples: int = 64
    sanity_eps: list[float] = field(default_factory=lambda: [*DEFAULT_WORST_CASE_EPS, 64 / 256, 1.0])
    sanity_attacks: list[str] = field(default_factory=lambda: ["PGD", "WB"])
    sanity_samples: int = 64
    sanity_max_steps: int = 200
    class_names: list[str] | None = None
    n_examples: int = 4
    example_attacks: list[str] | None = None
    seed: int = 0
    progress: bool = True
    figures: bool = True
    device: str | None = None
    worst_case: dict[str, Any] | None = None
    worst_case_splits: list[str] | None = None

    _WHAT = "evaluation setting"

    def __post_init__(self) -> None:
        unknown = [d for d in self.detectors if d not in DETECTOR_NAMES]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; choose from {list(DETECTOR_NAMES)}.")
        bad = [m for m in self.cushion_modes if m not in ("with", "without")]
        if bad or not self.cushion_modes:
            raise ValueError(f"cushion_modes must be a non-empty list of 'with'/'without', got {self.cushion_modes}.")
        if not 0.0 < float(self.tnr) < 1.0:
            raise ValueError(f"tnr must lie in (0, 1), got {self.tnr}.")
        for name in ("batch_size", "conventional_steps", "adaptive_steps", "cw_binary_search_steps", "cw_steps",
                     "n_fit", "stress_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.attacks and self.worst_case is None:
            raise ValueError("attacks must name at least one attack (or give worst_case settings).")
        if self.worst_case is not None:
            if not isinstance(self.worst_case, Mapping):
                raise ValueError(f"worst_case must be a dict of settings or None, got {self.worst_case!r}.")
            self.worst_case_config()  # fail early on bad settings
        check_unique_labels([_spec(a)[0] for a in self.attacks])

    def worst_case_config(self) -> WorstCaseConfig:
        """The :class:`~monai_aegis.evaluation.worst_case.WorstCaseConfig` of ``worst_case`` (which must be set)."""
        base = {"seed": self.seed, "batch_size": self.batch_size, "progress": self.progress}
        return WorstCaseConfig.from_dict({**base, **dict(self.worst_case or {})})


def default_layer_subsets(layers: Sequence[str]) -> OrderedDict[str, list[str]]:
    """Layer-ablation subsets: each single layer, the shallow half, the deep half and all layers."""
    layers = list(layers)
    out: OrderedDict[str, list[str]] = OrderedDict((f"only {n}", [n]) for n in layers) if len(layers) > 1 else OrderedDict()
    if len(layers) > 2:
        half = (len(layers) + 1) // 2
        out["shallow"] = layers[:half]
        out["deep"] = layers[half:]
    out["all"] = layers
    return out
