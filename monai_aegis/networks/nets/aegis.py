# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""AegisWrapper: Cushion -> classifier -> hooked features -> Shield of the predicted class -> accept / reject."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ...metrics.detection import accept_mask, check_threshold, per_sample_threshold
from ...utils.batches import iter_batches
from ...utils.io import atomic_torch_save, safe_torch_load
from ...utils.precision import resolve_amp, run_in_precision
from ...utils.validation import check_image_batch
from ..hooks import INPUT_LAYER, FeatureHooks, resolve_layer_names
from .shield import Shield

__all__ = [
    "SHIELD_INPUTS",
    "AegisWrapper",
    "build_aegis",
    "calibrated_thresholds",
    "per_sample_threshold",
]

logger = logging.getLogger(__name__)

_FORMAT = "monai_aegis.AegisWrapper/1"


def calibrated_thresholds(
    scores: torch.Tensor,
    pred: torch.Tensor,
    num_classes: int,
    tnr: float = 0.9,
    per_class: bool = True,
    min_per_class: int = 20,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Reject thresholds on a Shield's clean logits that accept a fraction ``tnr`` of clean images.

    Args:
        scores: ``(N,)`` clean logits of the predicted class on clean images (:meth:`AegisWrapper.shield_scores`).
        pred: ``(N,)`` the classifier's predictions on them.
        num_classes: number of classes (length of a per-class threshold).
        tnr: target true-negative rate (fraction of clean images accepted), in (0, 1).
        per_class: one threshold per predicted class, or one global threshold.
        min_per_class: a class with fewer clean predictions gets the global threshold.

    Returns:
        ``(threshold, info)``: the ``(num_classes,)`` (per class) or ``(1,)`` (global) threshold -- an image is
        accepted when its clean logit is ``>=`` its predicted class's threshold -- and a dict with ``tnr``,
        ``per_class``, ``n``, ``fallback_classes`` and the ``accepted_fraction`` of the given images.
    """
    from ...metrics import threshold_at_tnr

    if not 0.0 < float(tnr) < 1.0:
        raise ValueError(f"tnr must lie in (0, 1), got {tnr}.")
    scores, pred = scores.detach().float().cpu().reshape(-1), pred.detach().cpu().reshape(-1)
    # Detection convention: score = -clean logit (higher = more adversarial); reject when score > t.
    global_t = -threshold_at_tnr(-scores, tnr)
    info: dict[str, Any] = {"tnr": float(tnr), "per_class": bool(per_class), "n": int(scores.numel()),
                            "fallback_classes": []}
    if per_class:
        thr = torch.full((int(num_classes),), float(global_t))
        for y in range(int(num_classes)):
            sel = scores[pred == y]
            if sel.numel() >= min_per_class:
                thr[y] = -threshold_at_tnr(-sel, tnr)
            else:
                info["fallback_classes"].append(y)
    else:
        thr = torch.tensor([float(global_t)])
    accepted = accept_mask(-scores, -thr, pred).float().mean()
    info["accepted_fraction"] = float(accepted)
    return thr, info


class AegisWrapper(nn.Module):
    """Wrap a (hospital) classifier with the Medical Aegis defence.

    ``forward(x)`` returns the classifier's logits on the cushioned input, so the wrapper drops into MONAI
    inferers, metrics and ``CheckpointSaver`` unchanged. :meth:`screen` additionally runs the Shield on the
    hooked features of the same forward pass and returns accept/reject decisions. With neither Shield nor
    Cushion the wrapper reproduces the classifier exactly.

    Inputs are images in the range the Cushion expects (``[0, 1]``); put any further normalisation the
    classifier needs (e.g. ImageNet mean/std) inside ``classifier`` so the Cushion sees image intensities.

    Args:
        classifier: the frozen classifier; ``forward`` returns ``(B, Y)`` logits.
        shield: a :class:`~monai_aegis.networks.Shield` trained on this classifier's features, or ``None``.
        layer_names: hooked layers (default: the Shield's ``layer_names``).
        cushion: an ``nn.Module`` (e.g. ``CushionLayer``), a preset name such as ``"jpeg80"``, or ``None``.
        threshold: reject threshold on the Shield's clean logit, a float or a ``(Y,)`` tensor (per predicted
            class); usually set by :meth:`calibrate`. Samples with ``clean logit >= threshold`` are accepted.
        input_shape: ``(C, *spatial)`` of the images the Shield was built and calibrated for (``build_aegis``
            records it; saved with the wrapper). :meth:`screen` refuses other shapes with a message saying so;
            ``None``: only the channel count (from the classifier's first convolution) is checked.
        amp: run the classifier in reduced precision (:func:`~monai_aegis.utils.resolve_amp`: ``True`` =
            bfloat16 autocast on a CPU that has it, float16 on CUDA; ``"bf16"`` / ``"fp16"``). Logits and hooked
            features come back in float32; the Cushion and the Shield run in float32. Attacks built from the
            wrapper (:func:`~monai_aegis.attacks.make_aegis_attack`, the Shield's training adversaries, the
            evaluation) run the classifier the same way, so the system attacked is the system deployed. A runtime
            choice: not saved with the wrapper.

    The classifier is treated as frozen: the wrapper keeps it in eval mode whatever mode the wrapper is put in.
    """

    def __init__(
        self,
        classifier: nn.Module,
        shield: Shield | None = None,
        layer_names: Sequence[str] | str | None = None,
        cushion: nn.Module | str | None = None,
        threshold: float | torch.Tensor | None = None,
        input_shape: Sequence[int] | None = None,
        amp: bool | str | None = None,
    ) -> None:
        super().__init__()
        resolve_amp(amp, "cuda")  # a clear error for a misspelt value now, not at the first batch
        self.amp = amp
        self.classifier = classifier
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.shield = shield
        from ..layers.cushion import resolve_cushion

        self.cushion = resolve_cushion(cushion)
        if shield is not None:
            names = shield.layer_names if layer_names is None else resolve_layer_names(classifier, layer_names)
            if tuple(names) != tuple(shield.layer_names):
                raise ValueError(f"layer_names {list(names)} differ from the Shield's layers "
                                 f"{list(shield.layer_names)}.")
            self.layer_names: tuple[str, ...] = resolve_layer_names(classifier, names)
        else:
            self.layer_names = resolve_layer_names(classifier, layer_names) if layer_names is not None else ()
        self.register_buffer("threshold", torch.empty(0))
        self.calibration: dict[str, Any] = {}
        self.train(self.training)
        if threshold is not None:
            self.set_threshold(threshold)

    def train(self, mode: bool = True) -> AegisWrapper:
        """Set the Shield's mode; the classifier and the Cushion always stay in eval mode.

        The classifier is frozen: putting it in train mode would make BatchNorm use (and update) batch statistics,
        changing its predictions and its features under the Shield.
        """
        self.training = mode
        if self.shield is not None:
            self.shield.train(mode)
        self.classifier.eval()
        if self.cushion is not None:
            self.cushion.eval()
        return self

    # ------------------------------------------------------------------ forward paths
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the Cushion (identity without one)."""
        return x if self.cushion is None else self.cushion(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_in_precision(self.classifier, self.preprocess(x), self.amp)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One cushioned forward pass returning ``(logits, features)`` of the hooked layers (float32)."""
        if not self.layer_names:
            return self.forward(x), {}
        return run_in_precision(FeatureHooks(self.classifier, self.layer_names).run, self.preprocess(x), self.amp)

    def shield_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The features the Shield reads from ``x`` (cushioned): those of :meth:`forward_features`, without running
        the classifier when the Shield reads only the image (``shield_inputs="input"``), as in Shield training."""
        if self.layer_names == (INPUT_LAYER,):
            return OrderedDict([(INPUT_LAYER, self.preprocess(x))])
        return self.forward_features(x)[1]

    def set_threshold(self, threshold: float | torch.Tensor) -> None:
        t = check_threshold(threshold, None if self.shield is None else self.shield.num_classes)
        self.threshold = t.to(self.threshold.device)

    @property
    def score_threshold(self) -> torch.Tensor:
        """The reject threshold in detection-score units (``-threshold``; accept iff ``score <= score_threshold``,
        :func:`monai_aegis.metrics.accept_mask`), the convention the baselines' thresholds follow too."""
        return -self.threshold

    def check_input(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        """Check a batch against what this wrapper was built for, with one clear message per problem, and return
        it in the classifier's floating-point dtype (float64 / float16 images are converted, not refused).

        Raises:
            TypeError / ValueError: not a tensor; integer values (scale to [0, 1] first); a wrong rank, channel
                count or (when :attr:`input_shape` is known) spatial size; values outside [0, 1] with a Cushion.
        """
        if isinstance(x, torch.Tensor) and not x.is_floating_point():
            raise ValueError(f"{name} has integer dtype {x.dtype}: give float images scaled to [0, 1] "
                             "(e.g. monai.transforms.ScaleIntensity).")
        param = next(iter(self.classifier.parameters()), None)
        if param is not None and isinstance(x, torch.Tensor) and x.dtype != param.dtype:
            x = x.to(param.dtype)
        expected = self.input_shape
        first_conv = next((m for m in self.classifier.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        spatial = (len(expected) - 1,) if expected else (2, 3) if first_conv is None else (len(first_conv.kernel_size),)
        channels = expected[0] if expected else None if first_conv is None else int(first_conv.in_channels)
        check_image_batch(x, name, spatial_dims=spatial, value_range=(0.0, 1.0) if self.cushion is not None else None,
                          channels=channels)
        if expected and tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{name} has image shape {tuple(x.shape[1:])}, but this Aegis was built and calibrated for {expected}: "
                "resize the images first, as the bundle's preprocessing does "
                f"(monai_aegis.transforms.classification_transforms({expected[-1]}, {expected[0]})).")
        return x

    def screen(self, x: torch.Tensor, check_input: bool = True) -> dict[str, torch.Tensor]:
        """Classify and screen a batch.

        Returns:
            dict with ``logits`` ``(B, Y)``, ``probs``, ``pred`` ``(B,)``, ``shield_logits`` ``(B, Y)``,
            ``shield_logit`` (clean logit of the predicted class), ``score`` (``-shield_logit``, higher = more
            adversarial), ``threshold`` (per sample) and ``accept`` (bool). Without a Shield every sample is
            accepted and the Shield entries are absent.

        Raises:
            RuntimeError: when a Shield is present but no threshold was set (call :meth:`calibrate`).
        """
        if check_input:
            x = self.check_input(x)
        logits, feats = self.forward_features(x)
        pred = logits.argmax(1)
        out = {"logits": logits, "probs": logits.softmax(1), "pred": pred}
        if self.shield is None:
            out["accept"] = torch.ones_like(pred, dtype=torch.bool)
            return out
        if self.threshold.numel() == 0:
            raise RuntimeError("AegisWrapper has no reject threshold: call calibrate(clean_data) or set_threshold().")
        s_all = self.shield(feats)
        score = Shield.score(s_all, pred)
        out.update(shield_logits=s_all, shield_logit=-score, score=score,
                   threshold=per_sample_threshold(self.threshold.to(score), pred),
                   accept=accept_mask(score, self.score_threshold, pred))
        return out

    # ------------------------------------------------------------------ calibration
    @torch.no_grad()
    def shield_scores(
        self, data: Any, batch_size: int = 32, image_key: str = "image"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean logits of the predicted class and the predictions over a dataset: ``(scores (N,), pred (N,))``."""
        if self.shield is None:
            raise RuntimeError("AegisWrapper has no Shield to score with.")
        was_training = self.training
        self.eval()
        scores, preds = [], []
        try:
            for xb in iter_batches(data, batch_size, image_key):
                device = next(self.classifier.parameters()).device
                logits, feats = self.forward_features(xb.to(device))
                pred = logits.argmax(1)
                scores.append(Shield.select(self.shield(feats), pred).float().cpu())
                preds.append(pred.cpu())
        finally:
            self.train(was_training)
        if not scores:
            raise ValueError("calibration data is empty.")
        return torch.cat(scores), torch.cat(preds)

    def calibrate(
        self,
        clean_data: Any,
        tnr: float = 0.9,
        per_class: bool = True,
        min_per_class: int = 20,
        batch_size: int = 32,
        image_key: str = "image",
    ) -> torch.Tensor:
        """Set the reject threshold so that a fraction ``tnr`` of clean images is accepted.

        Per predicted class by default: each class's clean logits have their own scale, and one global threshold
        over all heads can accept far more than ``tnr`` of one class and far less of another. A class with fewer
        than ``min_per_class`` clean predictions falls back to the global threshold (recorded in
        :attr:`calibration`).

        Args:
            clean_data: clean images (held-out, not the Shield's training data): a tensor or an iterable of batches.
            tnr: target true-negative rate (fraction of clean images accepted), in (0, 1).
            per_class: one threshold per predicted class (default) or one global threshold.

        Returns:
            the threshold tensor (``(Y,)`` per class, ``(1,)`` global).
        """
        if not 0.0 < float(tnr) < 1.0:
            raise ValueError(f"tnr must lie in (0, 1), got {tnr}.")
        scores, pred = self.shield_scores(clean_data, batch_size, image_key)
        assert self.shield is not None
        thr, info = calibrated_thresholds(scores, pred, self.shield.num_classes, tnr, per_class, min_per_class)
        self.set_threshold(thr)
        self.calibration = info
        if info["fallback_classes"]:
            logger.warning("calibration: classes %s had fewer than %d clean predictions among %d images and use the "
                           "global threshold; calibrate on more images for per-class thresholds.",
                           info["fallback_classes"], min_per_class, info["n"])
        return self.threshold.clone()

    # ------------------------------------------------------------------ persistence
    def cushion_spec(self) -> dict[str, Any] | None:
        """The Cushion's config (``CushionLayer.get_config()``, what :meth:`save` stores), ``None`` without one.

        Raises:
            ValueError: a custom cushion module without ``get_config()``.
        """
        if self.cushion is None:
            return None
        get_config = getattr(self.cushion, "get_config", None)
        if get_config is None:
            raise ValueError(
                f"cannot save cushion {type(self.cushion).__name__}: it has no get_config(); "
                "use a CushionLayer or save the cushion separately."
            )
        return get_config()

    def save(self, path: str | os.PathLike) -> None:
        """Atomically save classifier weights, Shield weights and config, cushion config and thresholds.

        The file holds tensors and plain Python values only, so :meth:`load` reads it with ``weights_only=True``.
        """
        atomic_torch_save(
            {
                "format": _FORMAT,
                "layer_names": list(self.layer_names),
                "classifier_state": self.classifier.state_dict(),
                "shield_config": None if self.shield is None else self.shield.get_config(),
                "shield_state": None if self.shield is None else self.shield.state_dict(),
                "cushion": self.cushion_spec(),
                "threshold": self.threshold.detach().cpu(),
                "calibration": dict(self.calibration),
                "input_shape": None if self.input_shape is None else list(self.input_shape),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, classifier: nn.Module, map_location: Any = "cpu",
             amp: bool | str | None = None) -> AegisWrapper:
        """Rebuild a saved wrapper around ``classifier`` (an instance of the saved architecture; its weights are
        replaced by the saved ones), running it in the precision ``amp`` asks for.

        Raises:
            FileNotFoundError: when ``path`` does not exist.
            ValueError: when the file is not an AegisWrapper checkpoint or does not match ``classifier``.
        """
        ckpt = safe_torch_load(path, map_location=map_location)
        if not isinstance(ckpt, Mapping) or ckpt.get("format") != _FORMAT:
            raise ValueError(f"'{path}' is not an AegisWrapper checkpoint (format {_FORMAT}).")
        saved, own = ckpt["classifier_state"], classifier.state_dict()
        missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
        shapes = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
        if missing or unexpected or shapes:
            parts = []
            if shapes:
                k = shapes[0]
                parts.append(f"{len(shapes)} weight(s) of another shape, e.g. '{k}': saved {tuple(saved[k].shape)}, "
                             f"this classifier {tuple(own[k].shape)}")
            if missing:
                parts.append(f"{len(missing)} missing, e.g. '{missing[0]}'")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected, e.g. '{unexpected[0]}'")
            raise ValueError(f"the classifier does not match the weights saved in '{path}' ({'; '.join(parts)}): "
                             "build the architecture it was trained with (the bundle's network_def).")
        classifier.load_state_dict(saved)
        shield = None
        if ckpt["shield_config"] is not None:
            shield = Shield.from_config(ckpt["shield_config"])
            shield.load_state_dict(ckpt["shield_state"])
        cushion = None
        if ckpt["cushion"] is not None:
            from ..layers import cushion_from_config

            cushion = cushion_from_config(ckpt["cushion"])
        wrapper = cls(classifier, shield, ckpt["layer_names"] or None, cushion, input_shape=ckpt.get("input_shape"),
                      amp=amp)
        if ckpt["threshold"].numel():
            wrapper.set_threshold(ckpt["threshold"])
        wrapper.calibration = dict(ckpt.get("calibration", {}))
        return wrapper.to(next(iter(classifier.parameters())).device)


#: what the Shield reads: the classifier's hooked features, the (cushioned) image through a small CNN of its own,
#: or both
SHIELD_INPUTS = ("features", "input", "both")


def build_aegis(
    classifier: nn.Module,
    input_shape: Sequence[int],
    num_classes: int,
    layer_names: Sequence[str] | str | None = None,
    cushion: str | nn.Module | None = "jpeg80",
    shield_width: int = 32,
    shield_hidden: int = 64,
    device: Any = "cpu",
    shield_inputs: str = "features",
    input_depth: int = 4,
    input_stem: str = "strided",
    seed: int | None = None,
    amp: bool | str | None = None,
) -> AegisWrapper:
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
        shield_inputs: ``"features"`` (the paper's Shield: hooked classifier features), ``"input"`` (only a small
            CNN of the Shield's own on the cushioned image, :data:`~monai_aegis.networks.INPUT_LAYER`) or
            ``"both"`` -- the ablation switch of the robust input branch.
        input_depth: 3x3 convolutions of the input branch.
        input_stem: the input branch's first layer (:data:`~monai_aegis.networks.nets.shield.INPUT_STEMS`).
        seed: seed of the Shield's initial weights (drawn from a private generator state, so torch's global RNG is
            left as it was); ``None``: from torch's global RNG.
        amp: reduced precision for the classifier (see :class:`AegisWrapper`).
    """
    from monai.utils import look_up_option

    from ..layers.cushion import resolve_cushion

    mode = look_up_option(str(shield_inputs), SHIELD_INPUTS)
    layers: tuple[str, ...] = ()
    if mode != "input":
        layers = tuple(n for n in resolve_layer_names(classifier, layer_names or None) if n != INPUT_LAYER)
    if mode != "features":
        layers = (INPUT_LAYER, *layers)
    cushion_mod = resolve_cushion(cushion)
    classifier = classifier.to(device).eval()
    shape = tuple(int(s) for s in input_shape)
    param = next(iter(classifier.parameters()), None)
    try:
        with torch.no_grad():
            logits = classifier(torch.zeros((1, *shape), device=device, dtype=None if param is None else param.dtype))
    except RuntimeError as e:
        raise ValueError(f"the classifier cannot take images of input_shape {shape} (C, *spatial): {e}") from e
    if logits.ndim != 2 or logits.shape[1] != int(num_classes):
        raise ValueError(f"num_classes is {num_classes}, but the classifier outputs logits of shape "
                         f"{tuple(logits.shape)} (expected (B, {num_classes})).")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        shield = Shield.from_classifier(classifier, layers, shape, int(num_classes),
                                        preprocess=cushion_mod, width=int(shield_width), hidden=int(shield_hidden),
                                        input_depth=int(input_depth), input_stem=str(input_stem))
    return AegisWrapper(classifier, shield, cushion=cushion_mod, input_shape=shape, amp=amp).to(device)
