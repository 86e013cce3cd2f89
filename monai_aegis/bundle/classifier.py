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


@torch.no_grad()
def accuracy(model: nn.Module, loader: Any, device: Any = "cpu") -> float:
    """Top-1 accuracy of ``model`` over a loader of ``{"image", "label"}`` batches."""
    model.eval()
    correct = total = 0
    for batch in loader:
        x = torch.as_tensor(batch["image"]).to(device)
        y = torch.as_tensor(batch["label"]).reshape(-1).to(device)
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("accuracy: the loader yielded no images.")
    return correct / total


def train_classifier(
    network: nn.Module,
    train_loader: Any,
    epochs: int = 10,
    lr: float = 1e-3,
    device: Any = "cpu",
    val_loader: Any = None,
    class_weights: bool = True,
) -> dict[str, Any]:
    """Train ``network`` from scratch with a MONAI ``SupervisedTrainer`` (AdamW, one-cycle learning rate,
    cross-entropy with balanced class weights: medical sets are rarely balanced).

    Returns:
        ``{"epochs", "loss", "val_accuracy"?}``.
    """
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    network.to(device)
    weight = None
    if class_weights:
        labels = torch.cat([torch.as_tensor(b["label"]).reshape(-1) for b in train_loader]).long()
        first = next(iter(train_loader))["image"]
        with torch.no_grad():
            num_classes = int(network.eval()(torch.as_tensor(first[:1]).to(device)).shape[1])
        counts = torch.bincount(labels, minlength=num_classes).float().clamp_min(1)
        weight = (counts.sum() / (len(counts) * counts)).to(device)
    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    steps = int(epochs) * len(train_loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    trainer = SupervisedTrainer(
        device=device, max_epochs=int(epochs), train_data_loader=train_loader, network=network, optimizer=opt,
        loss_function=nn.CrossEntropyLoss(weight=weight), decollate=False,
        prepare_batch=lambda b, d, nb, **kw: (b["image"].to(d), torch.as_tensor(b["label"]).reshape(-1).long().to(d)),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: sched.step())
    trainer.run()
    info: dict[str, Any] = {"epochs": int(epochs), "loss": float(torch.as_tensor(trainer.state.output["loss"]).detach())}
    if val_loader is not None:
        info["val_accuracy"] = accuracy(network, val_loader, device)
    network.eval()
    return info


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
) -> nn.Module:
    """The bundle's classifier: loaded from ``checkpoint`` when one is given (training skipped), else trained from
    scratch on ``train_loader`` and saved atomically to ``save_path`` (weights only).

    With ``adversarial`` settings whose ``eps`` is positive (keyword arguments of
    :func:`~monai_aegis.engines.adversarially_finetune`: ``eps``, ``method``, ``epochs``, ``steps``, ``lr``,
    ``beta``...), that classifier is then fine-tuned adversarially (TRADES / PGD-AT) on ``train_loader`` and saved to
    ``adversarial_save_path``; an existing file there is loaded instead of fine-tuning again.

    Raises:
        ValueError: neither a checkpoint nor training data.
    """
    from ..utils import atomic_torch_save

    if checkpoint:
        model = load_network(network, checkpoint, map_location=device).to(device)
        logger.info(f"classifier: loaded '{checkpoint}' (training skipped)")
    else:
        if network is None or train_loader is None:
            raise ValueError("prepare_classifier: give a classifier checkpoint, or network_def and training data.")
        info = train_classifier(network, train_loader, epochs, lr, device, val_loader)
        logger.info(f"classifier: trained from scratch for {epochs} epochs: {info}")
        if save_path:
            atomic_torch_save(network.state_dict(), save_path)
            logger.info(f"classifier: saved weights to '{save_path}'")
        model = network
    settings = dict(adversarial or {})
    if float(settings.get("eps", 0) or 0) > 0:
        if adversarial_save_path and Path(adversarial_save_path).is_file():
            model = load_network(model, adversarial_save_path, map_location=device).to(device)
            logger.info(f"classifier: loaded the adversarially fine-tuned weights '{adversarial_save_path}'")
        else:
            if train_loader is None:
                raise ValueError("adversarial fine-tuning of the classifier needs training data.")
            from ..engines import adversarially_finetune

            info = adversarially_finetune(model, train_loader, device=device, **settings)
            if val_loader is not None:
                info["val_accuracy"] = accuracy(model, val_loader, device)
            logger.info(f"classifier: adversarially fine-tuned: {info}")
            if adversarial_save_path:
                atomic_torch_save(model.state_dict(), adversarial_save_path)
                logger.info(f"classifier: saved the adversarially fine-tuned weights to '{adversarial_save_path}'")
    return model.eval()
