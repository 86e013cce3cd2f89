# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""The protected classifier of a bundle: load a pretrained one (state dict, safetensors or TorchScript) or train
one from scratch with a MONAI ``SupervisedTrainer``."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engines.classifier_training import accuracy, train_classifier
from ..utils import error_line

__all__ = ["accuracy", "is_torchscript", "load_network", "prepare_classifier", "train_classifier"]

logger = logging.getLogger(__name__)

#: keys under which checkpoints commonly nest the model weights
_STATE_KEYS = ("state_dict", "model", "network", "classifier_state", "model_state_dict")


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), which holds code as well as weights."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n.endswith("/code/__torch__.py") or "/code/" in n
                   for n in z.namelist())


def _state_dict(path: Path, map_location: Any) -> Mapping[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from monai.utils import optional_import

        st, has_st = optional_import("safetensors.torch")
        if not has_st:
            raise ImportError(f"'{path}' is a safetensors file: pip install safetensors")
        return st.load_file(str(path), device=str(map_location))
    from ..utils import safe_torch_load

    ckpt = safe_torch_load(path, map_location=map_location)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"'{path}' holds a {type(ckpt).__name__}, not a state dict.")
    for key in _STATE_KEYS:
        if isinstance(ckpt.get(key), Mapping):
            return ckpt[key]
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"'{path}' is not a state dict (and has none of the keys {list(_STATE_KEYS)}).")
    return ckpt


def load_network(network: nn.Module | None, checkpoint: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """Load pretrained classifier weights.

    Args:
        network: the architecture (``network_def`` of the bundle); not needed for a TorchScript file.
        checkpoint: a state dict saved with ``torch.save`` (read with ``weights_only=True``; a dict nesting it under
            ``state_dict``/``model``/``network`` works too, as do MONAI ``CheckpointSaver`` files), a
            ``.safetensors`` file, or a TorchScript archive (``torch.jit.save``), which replaces ``network``.

    Returns:
        the classifier in eval mode.

    Raises:
        FileNotFoundError: a missing checkpoint.
        ValueError: weights that do not fit ``network`` (the message lists the mismatching keys).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint '{path}' not found.")
    if is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location=map_location).eval()
        except RuntimeError as e:
            raise ValueError(f"'{path}' looks like a TorchScript archive but cannot be loaded as one "
                             f"(corrupt, truncated or from an incompatible PyTorch): {error_line(e)}") from e
    if network is None:
        raise ValueError(f"'{path}' is a state dict: give the architecture (network_def) to load it into.")
    state = _state_dict(path, map_location)
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"the weights in '{path}' do not fit {type(network).__name__}: {e}") from e
    return network.eval()


def _sidecar(weights_path: str | os.PathLike) -> Path:
    """The JSON file beside saved weights recording how they were made (``classifier.pt`` -> ``classifier.json``)."""
    return Path(weights_path).with_suffix(".json")


def _reusable(network: nn.Module, path: str | os.PathLike, settings: Mapping[str, Any], device: Any) -> str:
    """Load weights saved by an earlier run into ``network`` when their sidecar says they were made with exactly
    ``settings`` and the file is the one the sidecar describes; returns ``""`` on success, else why not."""
    import json

    path, side = Path(path), _sidecar(path)
    if not path.is_file():
        return f"no '{path}'"
    if not side.is_file():
        return f"'{side}' (the record of how '{path.name}' was made) is missing"
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        return f"'{side}' is unreadable: {error_line(e)}"
    saved = record.get("settings", {}) if isinstance(record, Mapping) else {}
    diff = [f"{k}: {saved.get(k, '<unset>')!r} -> {settings.get(k, '<unset>')!r}"
            for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)]
    if diff:
        return f"'{path.name}' was made with other settings ({'; '.join(diff)})"
    from ..utils import state_fingerprint

    before = {k: v.detach().clone() for k, v in network.state_dict().items()}
    try:
        load_network(network, path, map_location=device)
        why = "" if state_fingerprint(network) == record.get("weights") else (
            f"'{path.name}' is not the file '{side.name}' describes (its weights changed since)")
    except (ValueError, FileNotFoundError) as e:
        why = error_line(e)
    if why:
        network.load_state_dict(before)  # train from where the network was, not from the rejected file
    return why


def _save_with_record(network: nn.Module, path: str | os.PathLike, settings: Mapping[str, Any],
                      info: Mapping[str, Any]) -> None:
    """Weights, then the sidecar describing them (a crash between the two leaves weights without a record, which a
    later run does not reuse)."""
    from ..utils import atomic_torch_save, atomic_write_json, json_safe, state_fingerprint

    atomic_torch_save(network.state_dict(), path)
    atomic_write_json(_sidecar(path), {"settings": dict(settings), "weights": state_fingerprint(network),
                                       "info": json_safe(dict(info))})


def _train_or_reuse(network: nn.Module, path: str | os.PathLike | None, plan: Mapping[str, Any], resume: bool,
                    device: Any, what: str, train: Any) -> None:
    """Reuse the weights at ``path`` when ``resume`` and their record matches ``plan``; else ``train()`` (which
    returns an info dict) and save the weights with their record. The log says which, and why."""
    why = _reusable(network, path, plan, device) if resume and path else "resume is off"
    if not why:
        logger.info(f"classifier: reused the {what} '{path}' of an earlier run with the same settings "
                    "(training skipped; resume=False retrains)")
        return
    if resume and path:
        logger.info(f"classifier: training the {what} ({why})")
    info = train()
    logger.info(f"classifier: trained the {what}: {info}")
    if path:
        _save_with_record(network, path, plan, info)
        logger.info(f"classifier: saved the {what} to '{path}'")


def prepare_classifier(
    network: nn.Module | None,
    checkpoint: str | os.PathLike | None = None,
    train_loader: Any = None,
    val_loader: Any = None,
    epochs: int = 10,
    lr: float = 1e-3,
    device: Any = "cpu",
    save_path: str | os.PathLike | None = None,
    adversarial: Mapping[str, Any] | None = None,
    adversarial_save_path: str | os.PathLike | None = None,
    resume: bool = False,
    settings: Mapping[str, Any] | None = None,
    amp: bool | str | None = False,
) -> nn.Module:
    """The bundle's classifier: loaded from ``checkpoint`` when one is given (training skipped), else trained from
    its initial weights (random, or the pretrained ones the network loaded) on ``train_loader`` and saved atomically
    to ``save_path`` (weights), with a JSON record beside it (``classifier.json``: the settings it was trained with
    and a fingerprint of the weights).

    With ``adversarial`` settings whose ``eps`` is positive (keyword arguments of
    :func:`~monai_aegis.engines.adversarially_finetune`: ``eps``, ``method``, ``epochs``, ``steps``, ``lr``,
    ``beta``...), that classifier is then fine-tuned adversarially (TRADES / PGD-AT) on ``train_loader`` and saved to
    ``adversarial_save_path`` with its record likewise.

    Args:
        resume: reuse weights an earlier run saved at ``save_path`` / ``adversarial_save_path`` instead of training
            again -- only when their record matches this run (the architecture and its seeded initial weights,
            ``epochs``, ``lr``, ``settings``; for the fine-tuned file also the ``adversarial`` settings and the base
            classifier's weights) and the file is the one recorded. Otherwise the log says why and training runs.
        settings: JSON-like description of the training data (dataset, size, seed...) recorded with the weights.
        amp: reduced precision for the classifier's training (:func:`~monai_aegis.engines.train_classifier`).

    Raises:
        ValueError: neither a checkpoint nor training data; ``settings`` that are not JSON-like.
    """
    import json

    try:
        data = json.loads(json.dumps(dict(settings or {})))
    except (TypeError, ValueError) as e:
        raise ValueError(f"prepare_classifier: settings must be JSON-like values: {error_line(e)}") from None
    if checkpoint:
        model = load_network(network, checkpoint, map_location=device).to(device)
        logger.info(f"classifier: loaded '{checkpoint}' (training skipped)")
    else:
        if network is None or train_loader is None:
            raise ValueError("prepare_classifier: give a classifier checkpoint, or network_def and training data.")
        from ..utils import state_fingerprint

        plan = {**data, "architecture": type(network).__name__, "initial_weights": state_fingerprint(network),
                "epochs": int(epochs), "lr": float(lr), **({"amp": str(amp)} if amp else {})}
        _train_or_reuse(network, save_path, plan, resume, device, "classifier",
                        lambda: train_classifier(network, train_loader, epochs, lr, device, val_loader, amp=amp))
        model = network
    at = dict(adversarial or {})
    if float(at.get("eps", 0) or 0) > 0:
        if train_loader is None:
            raise ValueError("adversarial fine-tuning of the classifier needs training data.")
        from ..engines import adversarially_finetune
        from ..utils import json_safe, state_fingerprint

        def finetune() -> dict[str, Any]:
            info = adversarially_finetune(model, train_loader, device=device, **at)
            if val_loader is not None:
                info["val_accuracy"] = accuracy(model, val_loader, device)
            return info

        plan = {**data, **json.loads(json.dumps(json_safe(at))), "base_weights": state_fingerprint(model)}
        _train_or_reuse(model, adversarial_save_path, plan, resume, device, "adversarially fine-tuned classifier",
                        finetune)
    return model.eval()
