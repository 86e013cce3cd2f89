# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Steps of the bundle workflows that configs call: build the defended model, calibrate and save it, summarise."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..evaluation.datasets import stack_loader
from ..networks.nets.aegis import SHIELD_INPUTS, build_aegis
from ..utils import json_safe

__all__ = [
    "SHIELD_INPUTS",
    "SUMMARY_WORST_CASE",
    "build_aegis",
    "evaluate_bundle",
    "finalize_training",
    "format_summary",
    "seeded_subset",
    "load_aegis",
    "recalibrate_site",
    "adapt_site",
    "site_datalist",
    "stack_loader",
]

logger = logging.getLogger(__name__)


#: the training summary's reduced worst-case budget (the full one: ``python -m monai_aegis evaluate --worst-case``);
#: ``max_images``: at most that many test images, a seeded random subset (``None``: all of them)
SUMMARY_WORST_CASE: dict[str, Any] = {
    "eps": [4 / 256, 8 / 256, 16 / 256], "steps": 50, "pgd_steps": 20, "lams": [0.3],
    "proxies": ["smooth"], "blackbox_eps": [], "convergence_samples": 0, "max_images": 64,
}


def finalize_training(
    wrapper: Any,
    val_loader: Any,
    test_loader: Any,
    save_path: str | os.PathLike,
    summary_path: str | os.PathLike | None = None,
    tnr: float = 0.9,
    attacks: Sequence[str] | Mapping[str, Mapping[str, Any]] = ("PGD", "WB"),
    attack_steps: int = 10,
    max_eval: int | None = None,
    class_names: Sequence[str] | None = None,
    started: float | None = None,
    eps: float | None = None,
    worst_case: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Calibrate the reject threshold at ``tnr`` on the clean validation images, save the wrapper (rank 0,
    atomically), measure the worst-case robust accuracy of the saved system at a few eps with a reduced budget
    (``worst_case``: settings of :class:`~monai_aegis.evaluation.WorstCaseConfig`, default
    :data:`SUMMARY_WORST_CASE`; ``{"eps": []}`` skips it), attack the test images with each of ``attacks`` (names, or
    ``{name: overrides}``; L-inf ``eps``, through the Cushion; sharded over ranks under torchrun) and print and save
    a short summary that records the settings it used.

    Returns:
        the summary dict (also written as JSON to ``summary_path``).
    """
    import ignite.distributed as idist

    from ..attacks import DEFAULT_EPS_LINF
    from ..evaluation import WorstCaseConfig, worst_case_evaluation
    from ..metrics import tpr_key
    from ..networks.nets.classifiers import architecture_name
    from ..utils import atomic_write_json
    from .distributed import sharded_detection

    eps = DEFAULT_EPS_LINF if eps is None else float(eps)
    device = next(wrapper.classifier.parameters()).device
    wrapper.eval()
    wrapper.calibrate(val_loader, tnr=tnr)
    if idist.get_rank() == 0:
        Path(save_path).parent.mkdir(parents=True, exist_ok=True)
        wrapper.save(save_path)
    xt, yt = stack_loader(test_loader, max_eval)
    xt, yt = xt.to(device), yt.to(device)
    with torch.no_grad():
        clean = wrapper.screen(xt)
    l2 = ("cwl2", "pgdl2")  # L2 attacks keep their own budget

    def _spec(a: str) -> dict[str, Any]:
        base: dict[str, Any] = {"steps": int(attack_steps)}
        if "".join(ch for ch in a.lower() if ch not in "-_ ") not in l2:
            base["eps"] = eps
        return {**base, **(dict(attacks[a] or {}) if isinstance(attacks, Mapping) else {})}

    spec = {a: _spec(a) for a in attacks}
    metrics = sharded_detection(wrapper, xt, yt, spec, tnr=tnr)
    key = tpr_key(tnr)
    wc_overrides = {**SUMMARY_WORST_CASE, **dict(worst_case or {})}
    wc_images = wc_overrides.pop("max_images", None)
    wc_settings = None
    if wc_overrides.get("eps"):  # an empty eps list skips the worst case
        wc_settings = WorstCaseConfig.from_dict(wc_overrides)
    if wc_images is not None and int(wc_images) < 1:
        raise ValueError(f"summary_worst_case: max_images must be >= 1 or None, got {wc_images}.")
    wc_record = None
    wc_index = torch.arange(yt.numel())
    if wc_settings is not None:
        wc_index = seeded_subset(yt.numel(), wc_images, wc_settings.seed)
    if wc_settings is not None and idist.get_rank() == 0:
        xv = stack_loader(val_loader)[0]
        wc_record = worst_case_evaluation(wrapper, xt.cpu()[wc_index], yt.cpu()[wc_index], xv, wc_settings,
                                          device=device)
    summary: dict[str, Any] = {
        "wrapper": str(save_path),
        "classifier": architecture_name(wrapper.classifier),
        "threshold": wrapper.threshold.tolist(),
        "layer_names": list(wrapper.layer_names),
        "cushion": None if wrapper.cushion is None else wrapper.cushion_spec(),
        "class_names": list(class_names) if class_names else None,
        "n_test": int(yt.numel()),
        "tnr": float(tnr),
        "eps": eps,
        "clean_accuracy": float((clean["pred"] == yt).float().mean()),
        "clean_accepted": float(clean["accept"].float().mean()),
        "val_accepted": float(wrapper.calibration.get("accepted_fraction", float("nan"))),
        "calibration_fallback_classes": list(wrapper.calibration.get("fallback_classes", [])),
        "attacks": {k: {m: v[m] for m in ("auroc", key, "attack_success", "robust_accuracy") if m in v}
                    for k, v in metrics.items()},
        "attack_steps": int(attack_steps),
        "world_size": idist.get_world_size(),
    }
    if wc_settings is not None:
        summary["worst_case"] = {
            "settings": {k: wc_settings.to_dict()[k] for k in ("eps", "attacks", "lams", "steps", "pgd_steps",
                                                                "proxies", "targets")},
            "curve": None if wc_record is None else [
                {k: r.get(k) for k in ("eps", "robust_accuracy", "undefended_robust_accuracy", "success_rate")}
                for r in wc_record["curve"]],
            "n_images": int(wc_index.numel()),
            "proxies": None if wc_record is None else wc_record["proxies"],
            "notes": [] if wc_record is None else wc_record["notes"],
            "seconds": None if wc_record is None else round(wc_record["seconds"], 1),
        }
    if started is not None:
        summary["seconds"] = round(time.time() - float(started), 1)
    summary = json_safe(summary)  # NaN (e.g. AUROC when no attack succeeded) -> None
    if idist.get_rank() == 0:
        if summary_path:
            atomic_write_json(summary_path, summary)
        print(format_summary(summary), flush=True)
    return summary


def seeded_subset(n: int, max_images: int | None, seed: int = 0) -> torch.Tensor:
    """Sorted indices of at most ``max_images`` of ``n`` items, a random subset seeded with ``seed`` (all of them when
    ``max_images`` is ``None`` or not smaller than ``n``): the images the summary's reduced worst case attacks."""
    if max_images is None or int(max_images) >= n:
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[: int(max_images)].sort().values


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _eps_text(eps: float) -> str:
    return f"{eps * 256:g}/256"


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines of :func:`finalize_training`'s summary, each figure named for what it measures."""
    from ..metrics import tpr_key

    tnr = float(summary.get("tnr", 0.9))
    key = tpr_key(tnr)
    lines = [
        f"Aegis saved to {summary['wrapper']} (classifier {summary.get('classifier', '?')}, layers "
        f"{summary['layer_names']}, reject thresholds {[round(t, 3) for t in summary['threshold']]})",
        f"clean test accuracy {summary['clean_accuracy']:.3f} on {summary['n_test']} images; clean images accepted: "
        f"{summary['clean_accepted']:.3f} (test), {summary['val_accepted']:.3f} (validation, target {tnr:g})",
    ]
    if summary.get("calibration_fallback_classes"):
        lines.append(f"note: classes {summary['calibration_fallback_classes']} had too few validation images for "
                     "their own threshold and use the global one")
    wc = summary.get("worst_case")
    if wc and wc.get("curve"):
        st = wc["settings"]
        n_wc = wc.get("n_images", summary["n_test"])
        lines.append(
            f"worst-case robust accuracy on {n_wc} of the {summary['n_test']} test images = share of them no attack "
            "could turn into an accepted misclassification (rejected or still correct); "
            f"per-image worst case of {', '.join(map(str, st['attacks']))} through the "
            f"Cushion (BPDA proxies {', '.join(wc['proxies'])}), REDUCED budget ({st['steps']} / {st['pgd_steps']} "
            "steps) -- `python -m monai_aegis evaluate --worst-case` runs the full one:")
        for r in wc["curve"]:
            und = r.get("undefended_robust_accuracy")
            lines.append(f"  eps {_eps_text(r['eps'])}: {_fmt(r['robust_accuracy'])}"
                         + ("" if und is None else f" (undefended classifier: {_fmt(und)})"))
    eps = summary.get("eps")
    for name, m in summary["attacks"].items():
        lines.append(f"{name:>4} ({summary['attack_steps']} steps, eps {'?' if eps is None else _eps_text(eps)}): "
                     f"Shield AUROC {_fmt(m.get('auroc'))}, TPR@{100 * tnr:g}%TNR {_fmt(m.get(key))}, attack success "
                     f"(fooled the classifier) {_fmt(m.get('attack_success'))}, robust accuracy (rejected or still "
                     f"correct) {_fmt(m.get('robust_accuracy'))}")
    if "seconds" in summary:
        lines.append(f"total {summary['seconds']:.0f} s")
    return "\n".join(lines)


def load_aegis(network: nn.Module | None, path: str | os.PathLike, device: Any = "cpu",
               amp: bool | str | None = None) -> Any:
    """Rebuild the wrapper saved by a bundle's training (``AegisWrapper.save``) around ``network`` (the bundle's
    ``network_def``), in eval mode on ``device``, its classifier running in the precision ``amp`` asks for (the
    bundles' ``amp`` switch; see :class:`~monai_aegis.networks.AegisWrapper`).

    Raises:
        FileNotFoundError: a missing checkpoint (the message says how to create it).
    """
    from ..networks import AegisWrapper

    if not Path(path).is_file():
        raise FileNotFoundError(f"Aegis checkpoint '{path}' not found: run the bundle's train.json first "
                                "(python -m monai.bundle run --config_file <bundle>/train.json).")
    if network is None:
        raise ValueError("load_aegis needs the classifier architecture (network_def).")
    wrapper = AegisWrapper.load(path, network, map_location=device, amp=amp)
    return wrapper.to(device).eval()



#: fewer clean local images than this give a noisy threshold (a warning is printed)
SITE_MIN_IMAGES = 200


def site_datalist(folder: str | os.PathLike | Sequence[str | os.PathLike], recursive: bool = True) -> list[dict]:
    """Datalist of the clean local images for :func:`recalibrate_site` (``calibration_dir`` of ``calibrate.json``):
    a folder (or files / folders) of DICOM, NIfTI, PNG or JPEG images, labels not needed.

    Raises:
        ValueError: no folder given (the message names the bundle key to set).
    """
    from .screening import screening_datalist

    if not folder:
        raise ValueError("site recalibration needs clean local images: set calibration_dir, e.g. "
                         "--calibration_dir /data/site_clean_xrays (a few hundred clean, unlabelled studies).")
    return screening_datalist(folder, recursive=recursive)


def recalibrate_site(
    wrapper: Any,
    clean_loader: Any,
    save_path: str | os.PathLike,
    report_path: str | os.PathLike | None = None,
    tnr: float = 0.9,
    min_images: int = 20,
) -> dict[str, Any]:
    """Site recalibration: set the reject thresholds on a few hundred *clean, unlabelled* images of the local
    scanner / export pipeline, so that clean studies of this site pass at ``tnr`` (a Shield calibrated elsewhere can
    reject far more of them: another pipeline shifts the clean logits). Only the thresholds change; the classifier
    and Shield are untouched, so robustness to attacks at a given threshold is unchanged, but the new threshold may be
    looser -- the report records both, and the acceptance of the local images before and after.

    The images must be clean: an attacker who can place images in the calibration set can loosen the threshold.

    Args:
        wrapper: the trained :class:`~monai_aegis.networks.AegisWrapper` (modified in place: new thresholds).
        clean_loader: the local clean images (``{"image"}`` batches; labels are not needed nor used).
        save_path: where the recalibrated wrapper is written (atomically); keep the original beside it.
        report_path: JSON report (``None``: not written).
        tnr: target fraction of local clean images accepted.
        min_images: fewer images are refused (below :data:`SITE_MIN_IMAGES` a warning says the threshold is noisy).

    Returns:
        the report: ``n``, ``tnr``, ``threshold_before`` / ``threshold_after``, ``accepted_before`` /
        ``accepted_after`` (on the local images), ``saved``.

    Raises:
        ValueError: a wrapper without Shield or thresholds, or fewer than ``min_images`` images.
    """
    from ..utils import atomic_write_json

    if getattr(wrapper, "shield", None) is None or wrapper.threshold.numel() == 0:
        raise ValueError("site recalibration needs a trained, calibrated Aegis checkpoint (run train.json first).")
    wrapper.eval()
    scores, pred = wrapper.shield_scores(clean_loader)
    n = int(scores.numel())
    _check_site_images(n, min_images, "site recalibration", "a stable threshold")

    from ..networks import calibrated_thresholds, per_sample_threshold

    def accepted(thr: torch.Tensor) -> float:
        return float((scores >= per_sample_threshold(thr, pred)).float().mean())

    before = wrapper.threshold.detach().cpu().clone()
    after, info = calibrated_thresholds(scores, pred, wrapper.shield.num_classes, tnr, per_class=before.numel() > 1)
    wrapper.set_threshold(after)
    wrapper.calibration = {**info, "site_recalibrated": True}
    Path(save_path).parent.mkdir(parents=True, exist_ok=True)
    wrapper.save(save_path)
    report = {"n": n, "tnr": float(tnr), "threshold_before": before.tolist(), "threshold_after": after.tolist(),
              "accepted_before": accepted(before), "accepted_after": accepted(after),
              "predicted_classes": torch.bincount(pred, minlength=max(1, before.numel())).tolist(),
              "saved": str(save_path)}
    if report_path:
        atomic_write_json(report_path, json_safe(report))
    print(f"site recalibration on {n} clean local images: accepted {report['accepted_before']:.3f} with the "
          f"shipped thresholds {[round(t, 3) for t in report['threshold_before']]}, {report['accepted_after']:.3f} "
          f"with the new ones {[round(t, 3) for t in report['threshold_after']]} (target {tnr:g}); saved to "
          f"{save_path}", flush=True)
    return report


def _check_site_images(n: int, min_images: int, what: str, why: str) -> None:
    """Refuse fewer than ``min_images`` local images; warn below :data:`SITE_MIN_IMAGES` (``why``: what too few
    images make unreliable)."""
    if n < int(min_images):
        raise ValueError(f"{what} got {n} clean images; give at least {min_images} "
                         f"(a few hundred, {SITE_MIN_IMAGES}+, for {why}).")
    if n < SITE_MIN_IMAGES:
        logger.warning("%s on %d images: too few for %s; %d+ are recommended.", what, n, why, SITE_MIN_IMAGES)


def adapt_site(
    wrapper: Any,
    site_loader: Any,
    train_loader: Any,
    val_loader: Any,
    save_path: str | os.PathLike,
    report_path: str | os.PathLike | None = None,
    min_images: int = 20,
    check_fraction: float = 0.2,
    **adaptation: Any,
) -> dict[str, Any]:
    """Site adaptation (``adapt.json``): fine-tune the Shield adversarially on a few hundred *clean, unlabelled*
    local images mixed with its training images (:func:`monai_aegis.engines.adapt_shield_to_site`), recalibrate on
    the original validation images, and save the adapted wrapper beside the shipped one.

    Unlike :func:`recalibrate_site`, the thresholds are recomputed on the original validation images at the original
    target: the Shield learns that the local pipeline's clean images are clean, with its adversarial objective (local
    images are positives and sources of negatives), instead of the rule being loosened. ``train_loader`` and
    ``val_loader`` must be the data the Shield was trained and calibrated on (in the bundle: the same
    ``dataset_dir``, ``holdout_fraction``, ``seed`` and ``max_items`` as the training run). The images must be
    clean: whoever controls them controls what the Shield learns to accept.

    Args:
        wrapper: the trained :class:`~monai_aegis.networks.AegisWrapper` (modified in place).
        site_loader: the local clean images (``{"image"}`` batches; labels are not needed nor used).
        train_loader, val_loader: the bundle's training images (with labels) and clean validation images.
        save_path: where the adapted wrapper is written (atomically); keep the original beside it.
        report_path: JSON report (``None``: not written).
        min_images: fewer local images are refused (below :data:`SITE_MIN_IMAGES` a warning).
        check_fraction: share of the local images held back to check acceptance out of sample, in [0, 1) (``0``: all
            of them adapt the Shield, and only the in-sample figure is reported).
        adaptation: the fine-tuning settings of :func:`~monai_aegis.engines.adapt_shield_to_site`, whose defaults
            apply to those not given (``adversary``, ``epochs``, ``epoch_length``, ``lr``, ``eps``, ``site_fraction``,
            ``tnr``, ``seed``, ``batch_size``), and the original training's ``augment``, ``outliers``,
            ``outlier_fraction``, ``threshold_tnr`` (the bundle passes its own), so the fine-tuning keeps what the
            Shield learned from them.

    Returns:
        the report of :func:`~monai_aegis.engines.adapt_shield_to_site` (with its ``check_*`` figures when images
        were held back) plus ``check_fraction`` and ``saved``.

    Raises:
        ValueError: a wrapper without Shield or thresholds, too few local images, ``check_fraction`` outside [0, 1).
    """
    from ..engines import adapt_shield_to_site
    from ..utils import atomic_write_json, stack_images

    if getattr(wrapper, "shield", None) is None or wrapper.threshold.numel() == 0:
        raise ValueError("site adaptation needs a trained, calibrated Aegis checkpoint (run train.json first).")
    if not 0.0 <= float(check_fraction) < 1.0:
        raise ValueError(f"check_fraction must lie in [0, 1), got {check_fraction}.")
    x_site = stack_images(site_loader, name="the local images")
    n, why = int(x_site.shape[0]), "a reliable picture of the local pipeline"
    if n < int(min_images):
        _check_site_images(n, min_images, "site adaptation", why)  # refuses, naming the number given
    n_check = max(1, round(float(check_fraction) * n)) if float(check_fraction) > 0 else 0
    if n - n_check < int(min_images):
        raise ValueError(f"site adaptation: holding back check_fraction={check_fraction:g} of {n} local images leaves "
                         f"{n - n_check} to adapt on; give more images or a smaller check_fraction (at least "
                         f"{min_images} must remain).")
    _check_site_images(n - n_check, min_images, "site adaptation", why)  # warns when few are left to adapt on
    held = torch.zeros(n, dtype=torch.bool)
    held[seeded_subset(n, n_check, seed=int(adaptation.get("seed", 0)))] = True
    report = adapt_shield_to_site(wrapper, x_site[~held], train_loader, val_loader,
                                  check_data=x_site[held] if n_check else None, **adaptation)
    report["check_fraction"] = float(check_fraction)
    Path(save_path).parent.mkdir(parents=True, exist_ok=True)
    wrapper.save(save_path)
    report["saved"] = str(save_path)
    if report_path:
        atomic_write_json(report_path, json_safe(report))
    print(f"site adaptation on {report['n_site']} clean local images ({report['iterations']} Shield iterations, "
          f"{report['seconds']:.0f} s): accepted {report['site_accepted_before']:.3f} before, "
          f"{report['site_accepted_after']:.3f} after (in-sample)"
          + (f"; {report['n_check']} held-back local images: accepted {report['check_accepted_before']:.3f} before, "
             f"{report['check_accepted_after']:.3f} after (out of sample)" if "n_check" in report else "")
          + f"; validation {report['val_accepted']:.3f} at the recalibrated thresholds "
          f"{[round(t, 3) for t in report['threshold_after']]}; saved to {save_path}", flush=True)
    return report


def evaluate_bundle(
    wrapper: Any,
    train_loader: Any,
    val_loader: Any,
    test_loader: Any,
    config: dict[str, Any] | None = None,
    output_dir: str | os.PathLike | None = None,
    n_fit: int | None = None,
) -> dict[str, Any]:
    """The bundle's ``evaluate.json`` step: :func:`monai_aegis.evaluation.run_evaluation` of the saved wrapper on the
    test split (baselines fitted on the training split, thresholds on the validation split), writing ``report.md``,
    ``results.json`` and figures into ``output_dir``. Under torchrun only rank 0 evaluates (use
    :func:`~monai_aegis.bundle.sharded_detection` for attack evaluation sharded over ranks).

    Returns:
        the results dict (empty on ranks other than 0).
    """
    import ignite.distributed as idist

    from ..evaluation import run_evaluation

    if idist.get_rank() != 0:
        return {}
    config = dict(config or {})
    train = stack_loader(train_loader, n_fit or config.get("n_fit"))
    val = stack_loader(val_loader)
    test = stack_loader(test_loader, config.get("max_eval"))
    results = run_evaluation(wrapper, train, {"test": test}, val, config, output_dir=output_dir)
    from ..evaluation.report import summary_lines

    lines = [f"wrote {output_dir}/report.md and results.json in {results['timing']['total']:.0f} s"]
    print("\n".join(lines + summary_lines(results)), flush=True)
    return results
