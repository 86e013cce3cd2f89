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
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import DEFAULT_EPS_LINF, make_aegis_attack, make_attack
from ..detectors import DNNDetector, KernelDensityDetector, LIDDetector, MahalanobisDetector
from ..metrics import threshold_at_tnr, tpr_key
from ..networks import AegisWrapper, Shield, hooked_batches, per_sample_threshold, resolve_cushion
from ..networks.nets.classifiers import architecture_name
from ..utils import json_safe, stack_batches
from .config import SettingsMixin, attack_key, attack_spec, check_unique_labels
from .detection import detection_metrics, other_class_targets
from .progress import Progress
from .schema import SCHEMA_VERSION, validate_results
from .stress import stress_test
from .worst_case import DEFAULT_WORST_CASE_EPS, WorstCaseConfig, worst_case_evaluation

__all__ = [
    "ADAPTIVE_ATTACKS",
    "BASELINE_DETECTORS",
    "DEFAULT_ATTACKS",
    "EvaluationConfig",
    "default_layer_subsets",
    "run_evaluation",
]

#: the paper's attack list (Tables 2-4): conventional, transfer, feature-space and adaptive attacks
DEFAULT_ATTACKS: tuple[str, ...] = (
    "FGSM", "BIM", "PGD", "MIM", "CW-Linf", "PGD-L2", "CW-L2", "TF", "Fea", "HFC", "WB", "WB_d", "SPGD", "OPGD",
)
#: registry keys of the attacks that get ``adaptive_steps`` (the others ``conventional_steps``)
ADAPTIVE_ATTACKS: tuple[str, ...] = ("fea", "hfc", "wb", "wbd", "spgd", "opgd")
_SHIELD_ATTACKS = ("wb", "wbd", "spgd", "opgd")
#: baseline detector name -> (class, default constructor arguments, needs adversarial training features)
BASELINE_DETECTORS: dict[str, tuple[type, dict[str, Any], bool]] = {
    "kd": (KernelDensityDetector, {"bandwidth": "median"}, False),
    "lid": (LIDDetector, {"k": 20, "batch_size": 100}, True),
    "maha": (MahalanobisDetector, {"covariance": "ledoit_wolf"}, False),
    "dnn": (DNNDetector, {"epochs": 20}, True),
}
_DETECTOR_NAMES = ("shield", *BASELINE_DETECTORS)


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
        max_eval: images per evaluation split (a seeded random subset; ``None``: all).
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
    detectors: list[str] = field(default_factory=lambda: list(_DETECTOR_NAMES))
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
        unknown = [d for d in self.detectors if d not in _DETECTOR_NAMES]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; choose from {list(_DETECTOR_NAMES)}.")
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


# ------------------------------------------------------------------------------------------------------ data
def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n <= 0 or n >= x.shape[0]:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[idx], y[idx]


# ------------------------------------------------------------------------------------------------------ systems
@dataclass
class _Scored:
    """Classifier output and detector scores of a set of images (CPU tensors)."""

    pred: torch.Tensor
    scores: dict[str, torch.Tensor]
    accept: dict[str, torch.Tensor]
    features: OrderedDict[str, torch.Tensor] | None = None


class _System:
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
                                     self.device):
            logits.append(out.cpu())
            if self.wrapper.shield is not None:
                shield.append(self.wrapper.shield(OrderedDict((n, f[n]) for n in self.wrapper.layer_names)).cpu())
            for n in keep:
                feats[n].append(f[n].cpu())
        return (torch.cat(logits), torch.cat(shield) if shield else None,
                OrderedDict((n, torch.cat(v)) for n, v in feats.items()))

    def score(self, x: torch.Tensor, detectors: Sequence[str], keep_features: bool = False) -> _Scored:
        need = bool(set(detectors) & set(self.baselines)) or keep_features
        logits, shield_logits, feats = self.forward(x, self.layers if need else ())
        pred = logits.argmax(1)
        scores: dict[str, torch.Tensor] = {}
        accept: dict[str, torch.Tensor] = {}
        for d in detectors:
            if d == "shield":
                if shield_logits is None:
                    continue
                s = Shield.select(shield_logits, pred)
                thr = per_sample_threshold(self.wrapper.threshold.cpu(), pred)
                scores[d], accept[d] = -s, s >= thr
            elif d in self.baselines:
                s = self.baselines[d].score(feats, pred).float().cpu()
                scores[d], accept[d] = s, s <= self.thresholds.get(d, math.inf)
        return _Scored(pred, scores, accept, feats if keep_features else None)

    def feature_model(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        """The HFC attack's Gaussian feature model, fitted once on pooled clean training features."""
        if self._feature_model is None:
            from ..attacks import GaussianFeatureModel, extract_pooled_features

            feats = extract_pooled_features(self.classifier, x.to(self.device), self.wrapper.layer_names or self.layers,
                                            preprocess=self.cushion, batch_size=self.cfg.batch_size)
            self._feature_model = GaussianFeatureModel.fit(feats, y, reg_covar=1e-3).to(self.device)
        return self._feature_model


# ------------------------------------------------------------------------------------------------------ attacks
class _AttackFactory:
    """Builds named attacks against a system with the evaluation's budgets and context (guides, substitute, ...)."""

    def __init__(self, cfg: EvaluationConfig, guides: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
                 substitute: nn.Module | None) -> None:
        self.cfg = cfg
        self.guides = guides
        self.train = train
        self.substitute = substitute

    def kwargs(self, spec: Any, system: _System, **extra: Any) -> tuple[str, str, dict[str, Any]]:
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

    def build(self, spec: Any, system: _System, **extra: Any) -> tuple[str, Any]:
        label, name, kw = self.kwargs(spec, system, **extra)
        if system.wrapper.shield is not None and system.wrapper.threshold.numel():
            return label, make_aegis_attack(name, system.wrapper, **kw)
        if _key(name) in _SHIELD_ATTACKS:
            raise ValueError(f"{label} attacks the Shield; the wrapper has none.")
        return label, make_attack(name, system.classifier, preprocess=system.cushion, **kw)


def _craft(attack: Any, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, batch_size: int, device: torch.device,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    out = []
    for xb, yb, tb in zip(x.split(batch_size), y.split(batch_size), t.split(batch_size)):
        res = attack(xb.to(device), yb.to(device), target=tb.to(device))
        out.append(getattr(res, "x_adv", res).detach().cpu())
        if progress is not None:
            progress(xb.shape[0])
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------------ helpers
def _mean(x: torch.Tensor) -> float:
    return float(x.float().mean()) if x.numel() else float("nan")


def _fit_baselines(system: _System, names: Sequence[str], x: torch.Tensor, y: torch.Tensor, factory: _AttackFactory,
                   cfg: EvaluationConfig, notes: list[str], bar: Progress) -> dict[str, Any]:
    """Fit the baselines of ``system`` on clean (and, for LID/DNN, adversarial) training features."""
    info: dict[str, Any] = {"n": int(x.shape[0]), "n_adversarial": 0, "fit_attack": cfg.fit_attack}
    logits, _, feats = system.forward(x, system.layers)
    correct = logits.argmax(1) == y
    adv_feats = None
    if any(BASELINE_DETECTORS[n][2] for n in names):
        kw = {"eps": cfg.eps, "steps": cfg.conventional_steps, **cfg.fit_attack_kwargs}
        if _key(cfg.fit_attack) == "fgsm":
            kw.pop("steps")
        attack = make_attack(cfg.fit_attack, system.classifier, preprocess=system.cushion, **kw)
        t = other_class_targets(y, logits.shape[1], cfg.seed + 7)
        bar.set(f"fit attack ({system.label})")
        x_adv = _craft(attack, x, y, t, cfg.batch_size, system.device, bar)
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


def _calibrate(system: _System, x_val: torch.Tensor, cfg: EvaluationConfig, recalibrate_shield: bool) -> None:
    if recalibrate_shield and system.wrapper.shield is not None:
        system.wrapper.calibrate(x_val, tnr=cfg.tnr, batch_size=cfg.batch_size)
    if system.baselines:
        scored = system.score(x_val, list(system.baselines))
        for name in system.baselines:
            system.thresholds[name] = threshold_at_tnr(scored.scores[name], cfg.tnr)


def _robust(accept: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> float:
    return _mean(~accept | (pred == y))


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
    x_tr, y_tr = _subset(*stack_batches(train_data, name="train_data"), cfg.n_fit, cfg.seed)
    if isinstance(eval_data, Mapping):
        splits = {str(k): _subset(*stack_batches(v, name=f"eval_data[{k!r}]"), cfg.max_eval, cfg.seed + i)
                  for i, (k, v) in enumerate(eval_data.items())}
    else:
        splits = {"eval": _subset(*stack_batches(eval_data, name="eval_data"), cfg.max_eval, cfg.seed)}
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
    attacks = [a for a in cfg.attacks if has_shield or _key(_spec(a)[1]) not in _SHIELD_ATTACKS]
    if substitute is None and any(_key(_spec(a)[1]) == "tf" for a in attacks):
        attacks = [a for a in attacks if _key(_spec(a)[1]) != "tf"]
        notes.append("No substitute model was given: the transfer attack TF is skipped.")
    if substitute is not None:
        substitute = substitute.to(device).eval()
    layers = tuple(cfg.layers) if cfg.layers else tuple(wrapper.layer_names)
    if not layers:
        raise ValueError("no hooked layers: give config.layers or a wrapper with layer_names.")

    # guides of the feature-space attack: one correctly classified training image per class
    with torch.no_grad():
        tr_pred = torch.cat([wrapper(xb.to(device)).argmax(1).cpu() for xb in x_tr.split(cfg.batch_size)])
    guides = []
    for c in range(num_classes):
        idx = ((y_tr == c) & (tr_pred == c)).nonzero()[:, 0]
        idx = idx if idx.numel() else (y_tr == c).nonzero()[:, 0]
        guides.append(x_tr[idx[0]] if idx.numel() else x_tr[0])
    factory = _AttackFactory(cfg, torch.stack(guides), (x_tr, y_tr), substitute)

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
    systems: OrderedDict[str, _System] = OrderedDict()
    fit_info: dict[str, Any] = {"n": int(x_tr.shape[0]), "n_adversarial": 0, "fit_attack": cfg.fit_attack}
    t0 = time.perf_counter()
    for mode in modes:
        if mode == "with":
            w = wrapper
            label = cushion_name
        else:
            w = AegisWrapper(wrapper.classifier, wrapper.shield, cushion=None)
            if has_shield and wrapper.threshold.numel():
                w.set_threshold(wrapper.threshold)
            label = "none"
        system = _System(label, w, layers, cfg, device)
        info = _fit_baselines(system, baselines, x_tr, y_tr, factory, cfg, notes, bar)
        fit_info["n_adversarial"] = max(fit_info["n_adversarial"], info["n_adversarial"])
        recal = has_shield and (mode == "without" or not wrapper.threshold.numel())
        _calibrate(system, x_val, cfg, recalibrate_shield=recal)
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
                "split": split, "cushion": label, "accuracy": _mean(correct),
                "accepted": {d: _mean(a) for d, a in clean.accept.items()},
            })
            for spec in attacks:
                name, attack = factory.build(spec, system)
                bar.set(f"{split}/{label}/{name}")
                t_a = time.perf_counter()
                x_adv = _craft(attack, x, y, t, cfg.batch_size, device, bar)
                seconds = time.perf_counter() - t_a
                adv = system.score(x_adv, detectors)
                success = (adv.pred == t) & correct
                delta = (x_adv - x).flatten(1)
                linf, l2 = delta.abs().amax(1), delta.norm(dim=1)
                shield_acc = adv.accept.get("shield", torch.ones_like(success))
                robust = {"classifier": _robust(torch.ones_like(success), adv.pred, y)}
                robust.update({d: _robust(a, adv.pred, y) for d, a in adv.accept.items()})
                attack_records.append({
                    "split": split, "cushion": label, "attack": name, "n": int(correct.sum()),
                    "success_rate": _mean(success[correct]), "undetected_success": _mean((success & shield_acc)[correct]),
                    "robust_accuracy": robust, "mean_linf": _mean(linf[success]), "mean_l2": _mean(l2[success]),
                    "seconds": seconds,
                })
                for d in clean.scores:
                    m = detection_metrics(clean.scores[d], adv.scores[d], correct, success, cfg.tnr)
                    detection.append({
                        "split": split, "cushion": label, "attack": name, "detector": d, "auroc": m["auroc"],
                        "tpr": m[tpr_key(cfg.tnr)], "n_clean": m["n_clean"], "n_adv": m["n_adv"],
                        "adv_accepted": _mean(adv.accept[d][success]),
                    })
                    roc_scores[(split, label, name, d)] = (clean.scores[d][correct], adv.scores[d][success])
                for src in range(num_classes):
                    for dst in range(num_classes):
                        sel = correct & (y == src) & (t == dst)
                        if src == dst or not sel.any():
                            continue
                        rec = {"split": split, "cushion": label, "attack": name, "source": class_names[src],
                               "target": class_names[dst], "n": int(sel.sum()), "success_rate": _mean(success[sel]),
                               "undetected_success": _mean((success & shield_acc)[sel]),
                               "robust_accuracy": _robust(shield_acc[y == src], adv.pred[y == src], y[y == src]),
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
    layer_ablation = _layer_ablation(systems[first_mode], splits[ablation_split], ablation_split, ablation_attacks,
                                     keep_adv, factory, cfg, baselines, shield_variants, notes, num_classes)
    timing["layer_ablation"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- cushion ablation
    t0 = time.perf_counter()
    cushion_ablation = _cushion_ablation(wrapper, splits[ablation_split], ablation_split, x_val, factory, cfg, device,
                                         layers, num_classes) if has_shield else []
    timing["cushion_ablation"] = time.perf_counter() - t0

    # -------------------------------------------------------------------- stress test
    t0 = time.perf_counter()
    stress: list[dict[str, Any]] = []
    if cfg.stress_samples > 0:
        xs = _subset(*splits[ablation_split], cfg.stress_samples, cfg.seed + 3)[0]
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
    sanity = _sanity(systems[first_mode], splits[ablation_split], attack_records, ablation_split, first_mode, factory,
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
            "splits": {k: {"n": int(v[1].numel()), "class_counts": torch.bincount(v[1], minlength=num_classes).tolist()}
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


def _layer_ablation(system: _System, data: tuple[torch.Tensor, torch.Tensor], split: str, attacks: Sequence[Any],
                    keep_adv: Mapping[tuple[str, str, str], torch.Tensor], factory: _AttackFactory,
                    cfg: EvaluationConfig, baselines: Sequence[str], shield_variants: Mapping[str, AegisWrapper] | None,
                    notes: list[str], num_classes: int) -> list[dict[str, Any]]:
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
            x_adv = _craft(attack, x, y, t, cfg.batch_size, system.device)
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
                rows = {"shield": _shield_scores(w, x, x_adv, cfg, system.device), **rows}
            for b, (c, a) in rows.items():
                m = detection_metrics(c, a, correct, success, cfg.tnr)
                records.append({"split": split, "attack": label, "subset": sname, "layers": list(sub), "detector": b,
                                "auroc": m["auroc"], "tpr": m[tpr_key(cfg.tnr)]})
    if not variants:
        notes.append("Layer ablation: the baselines are refitted on each subset; the Shield is evaluated with all "
                      "layers only (pass shield_variants= with Shields trained on subsets to add them).")
    return records


@torch.no_grad()
def _shield_scores(w: AegisWrapper, x: torch.Tensor, x_adv: torch.Tensor, cfg: EvaluationConfig,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for data in (x, x_adv):
        scores = [w.screen(xb.to(device), check_input=False)["score"].cpu() for xb in data.split(cfg.batch_size)]
        out.append(torch.cat(scores))
    return out[0], out[1]


def _cushion_ablation(wrapper: AegisWrapper, data: tuple[torch.Tensor, torch.Tensor], split: str, x_val: torch.Tensor,
                      factory: _AttackFactory, cfg: EvaluationConfig, device: torch.device, layers: Sequence[str],
                      num_classes: int) -> list[dict[str, Any]]:
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
        w = AegisWrapper(wrapper.classifier, wrapper.shield, cushion=cushion)
        w.calibrate(x_val, tnr=cfg.tnr, batch_size=cfg.batch_size)
        system = _System(cname, w, layers, cfg, device)
        clean = system.score(x, ["shield"])
        correct = clean.pred == y
        for spec in cfg.cushion_ablation_attacks:
            label, attack = factory.build(spec, system)
            bar.set(f"cushion ablation {cname}/{label}")
            x_adv = _craft(attack, x, y, t, cfg.batch_size, device, bar)
            adv = system.score(x_adv, ["shield"])
            success = (adv.pred == t) & correct
            m = detection_metrics(clean.scores["shield"], adv.scores["shield"], correct, success, cfg.tnr)
            records.append({
                "split": split, "cushion": cname, "attack": label, "clean_accuracy": _mean(correct),
                "clean_accepted": _mean(clean.accept["shield"]), "success_rate": _mean(success[correct]),
                "undetected_success": _mean((success & adv.accept["shield"])[correct]), "auroc": m["auroc"],
                "tpr": m[tpr_key(cfg.tnr)],
                "robust_accuracy": _robust(adv.accept["shield"], adv.pred, y),
            })
    bar.close()
    return records


def _sanity(system: _System, data: tuple[torch.Tensor, torch.Tensor], attack_records: Sequence[Mapping[str, Any]],
            split: str, mode: str, factory: _AttackFactory, cfg: EvaluationConfig, device: torch.device,
            num_classes: int) -> dict[str, Any]:
    """Eps sweep (success must rise with eps and reach ~100 % unbounded) and white-box vs transfer success."""
    sweep, checks = [], []
    attacks = [a for a in cfg.sanity_attacks
               if system.wrapper.shield is not None or _key(_spec(a)[1]) not in _SHIELD_ATTACKS]
    if cfg.sanity_eps and attacks and cfg.sanity_samples > 0:
        x, y = _subset(*data, cfg.sanity_samples, cfg.seed + 5)
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
                x_adv = _craft(attack, x, y, t, cfg.batch_size, device, bar)
                adv = system.score(x_adv, ["shield"])
                success = (adv.pred == t) & correct
                acc = adv.accept.get("shield", torch.ones_like(success))
                row = {"attack": label, "eps": eps, "success_rate": _mean(success[correct]),
                       "undetected_success": _mean((success & acc)[correct])}
                rows.append(row)
            sweep += rows
            succ = [r["success_rate"] for r in rows]
            mono = all(b >= a - 0.05 for a, b in zip(succ, succ[1:]))
            checks.append({"name": f"{label}: success rises with eps", "passed": bool(mono),
                           "detail": ", ".join(f"{r['eps'] * 256:g}/256: {r['success_rate']:.2f}" for r in rows)})
            top = rows[-1]
            metric = "undetected_success" if _key(_spec(spec)[1]) in _SHIELD_ATTACKS else "success_rate"
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
