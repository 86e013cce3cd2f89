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
from ..utils import json_safe

__all__ = ["build_aegis", "evaluate_bundle", "finalize_training", "format_summary", "load_aegis", "stack_loader"]

logger = logging.getLogger(__name__)


def build_aegis(
    classifier: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    layer_names: Sequence[str] | str | None = None,
    cushion: str | nn.Module | None = "jpeg80",
    shield_width: int = 32,
    shield_hidden: int = 64,
    device: Any = "cpu",
) -> Any:
    """An :class:`~monai_aegis.networks.AegisWrapper` around ``classifier`` with a fresh Shield sized by a dry run.

    Args:
        classifier: the (frozen) classifier; logits ``(B, num_classes)``.
        input_shape: ``(C, H, W)`` of the preprocessed images.
        num_classes: number of classes.
        layer_names: hooked layers: names, a preset key (``"resnet50"``, ``"vgg16"``, ``"monai_densenet"``...), or
            ``None`` for the architecture's preset (``block1..4`` for ``small_vgg``).
        cushion: a Cushion preset name (``"jpeg80"``, ``"bit_depth4"``, ``"tvm"``...), a module, or ``None``.
        shield_width: channels per class in each Shield branch.
        shield_hidden: hidden units per class of the Shield's fusion MLP.
    """
    from ..networks import AegisWrapper, Shield, cushion_from_name, resolve_layer_names

    layers = resolve_layer_names(classifier, layer_names or None)
    cushion_mod = cushion_from_name(cushion) if isinstance(cushion, str) else cushion
    classifier = classifier.to(device).eval()
    shield = Shield.from_classifier(classifier, layers, tuple(int(s) for s in input_shape), int(num_classes),
                                    preprocess=cushion_mod, width=int(shield_width), hidden=int(shield_hidden))
    return AegisWrapper(classifier, shield, cushion=cushion_mod).to(device)


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
) -> dict[str, Any]:
    """Calibrate the reject threshold at ``tnr`` on the clean validation images, save the wrapper (rank 0,
    atomically), attack the test images with each of ``attacks`` (names, or ``{name: overrides}``; L-inf 16/256,
    through the Cushion; sharded over ranks under torchrun) and print and save a short summary.

    Returns:
        the summary dict (also written as JSON to ``summary_path``).
    """
    import ignite.distributed as idist

    from ..utils import atomic_write_json
    from .distributed import sharded_detection

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
    spec = {a: {"steps": int(attack_steps), **(dict(attacks[a] or {}) if isinstance(attacks, Mapping) else {})}
            for a in attacks}
    metrics = sharded_detection(wrapper, xt, yt, spec, tnr=tnr)
    summary: dict[str, Any] = {
        "wrapper": str(save_path),
        "threshold": wrapper.threshold.tolist(),
        "layer_names": list(wrapper.layer_names),
        "cushion": None if wrapper.cushion is None else wrapper._cushion_spec(),
        "class_names": list(class_names) if class_names else None,
        "n_test": int(yt.numel()),
        "clean_accuracy": float((clean["pred"] == yt).float().mean()),
        "clean_accepted": float(clean["accept"].float().mean()),
        "val_accepted": float(wrapper.calibration.get("accepted_fraction", float("nan"))),
        "attacks": {k: {m: v[m] for m in ("auroc", "tpr@90tnr", "attack_success", "robust_accuracy") if m in v}
                    for k, v in metrics.items()},
        "attack_steps": int(attack_steps),
        "world_size": idist.get_world_size(),
    }
    if started is not None:
        summary["seconds"] = round(time.time() - float(started), 1)
    summary = json_safe(summary)  # NaN (e.g. AUROC when no attack succeeded) -> None
    if idist.get_rank() == 0:
        if summary_path:
            atomic_write_json(summary_path, summary)
        print(format_summary(summary), flush=True)
    return summary


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines of :func:`finalize_training`'s summary."""
    lines = [
        f"Aegis saved to {summary['wrapper']} (layers {summary['layer_names']}, threshold "
        f"{[round(t, 3) for t in summary['threshold']]})",
        f"clean test accuracy {summary['clean_accuracy']:.3f} on {summary['n_test']} images; clean images accepted: "
        f"{summary['clean_accepted']:.3f} (test), {summary['val_accepted']:.3f} (validation, target 0.9)",
    ]
    for name, m in summary["attacks"].items():
        lines.append(f"{name:>4} ({summary['attack_steps']} steps, eps 16/256): AUROC {_fmt(m.get('auroc'))}, "
                     f"TPR@90%TNR {_fmt(m.get('tpr@90tnr'))}, attack success {_fmt(m.get('attack_success'))}, "
                     f"robust accuracy {_fmt(m.get('robust_accuracy'))}")
    if "seconds" in summary:
        lines.append(f"total {summary['seconds']:.0f} s")
    return "\n".join(lines)


def load_aegis(network: nn.Module | None, path: str | os.PathLike, device: Any = "cpu") -> Any:
    """Rebuild the wrapper saved by a bundle's training (``AegisWrapper.save``) around ``network`` (the bundle's
    ``network_def``), in eval mode on ``device``.

    Raises:
        FileNotFoundError: a missing checkpoint (the message says how to create it).
    """
    from ..networks import AegisWrapper

    if not Path(path).is_file():
        raise FileNotFoundError(f"Aegis checkpoint '{path}' not found: run the bundle's train.json first "
                                "(python -m monai.bundle run --config_file <bundle>/train.json).")
    if network is None:
        raise ValueError("load_aegis needs the classifier architecture (network_def).")
    wrapper = AegisWrapper.load(path, network, map_location=device)
    return wrapper.to(device).eval()




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
    lines = [f"wrote {output_dir}/report.md and results.json in {results['timing']['total']:.0f} s"]
    for c in results["sanity"]["checks"]:
        lines.append(f"  {'PASS' if c['passed'] else ('n/a' if c['passed'] is None else 'FAIL')}: {c['name']}")
    print("\n".join(lines), flush=True)
    return results
