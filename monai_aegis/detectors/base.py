# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Common interface of the feature-space adversarial detectors (KD, LID, MAHA, DNN).

**Features.** A detector consumes a mapping ``layer_name -> Tensor`` as produced by
:class:`monai_aegis.networks.FeatureHooks` (``hooks.run(x)[1]``): each tensor is ``(N, C, *spatial)`` (a
feature map, 1-3 spatial dims) or ``(N, D)`` (a vector); all layers share the batch size ``N``. Detectors that
work on vectors (KD, LID, MAHA) reduce each layer first (``reduction="mean"``: global average pooling with
:func:`monai_aegis.networks.pool_features`, the paper's choice; ``"flatten"``: all activations); DNN keeps
the maps (``reduction="none"``).

**Fitting.** ``fit(features, labels, **method_specific)`` on clean features of the training set (with true
labels where the method is class-conditional), plus adversarial and/or noisy features where the method is
supervised (LID, DNN). ``fit`` returns the detector.

**Scoring.** ``score(features, pred_labels=None) -> Tensor (N,)``, **higher = more adversarial**.
``pred_labels`` are the classifier's predicted classes (needed by KD; optional for MAHA). The per-layer
scores are available from ``score_layers``; ``score`` combines them (mean over layers for KD, LID and MAHA,
as in the Medical Aegis paper; sum of logits for DNN). Scoring follows the device and floating dtype of the
features: fitted tensors are copied there once and cached, so a detector fitted on CPU scores CUDA features.

**Persistence.** ``state_dict()`` holds only tensors and plain Python types (``torch.load(...,
weights_only=True)`` safe); ``load_state_dict`` restores configuration and fitted state. ``save(path)``
writes atomically; :func:`load_detector` rebuilds the right class from a file or a state dict.

**Errors.** ``ValueError`` for an unknown or missing layer name (with close matches), wrong feature shapes,
NaN/Inf features, mismatched sample or label counts; ``RuntimeError`` when scoring an unfitted detector.
"""

from __future__ import annotations

import difflib
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import torch
from monai.utils import look_up_option

from ..networks import pool_features
from ..utils import atomic_torch_save, check_labels, safe_torch_load

__all__ = ["DETECTORS", "FeatureDetector", "Features", "load_detector", "pairwise_sq_dists"]

#: A mapping ``layer_name -> (N, C, *spatial) or (N, D) tensor``.
Features = Mapping[str, torch.Tensor]

#: Registry ``short name -> detector class`` (filled by subclasses defining ``name``).
DETECTORS: dict[str, type[FeatureDetector]] = {}

_FORMAT_VERSION = 1
_T = TypeVar("_T", bound="FeatureDetector")


def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``x`` ``(N, D)`` and ``y`` ``(M, D)`` -> ``(N, M)``.

    One matrix product (``|x|^2 + |y|^2 - 2 x y^T``), clamped at 0. Callers centre the data first so that the
    cancellation error stays small relative to the distances.
    """
    d2 = torch.addmm((x * x).sum(1, keepdim=True), x, y.T, alpha=-2.0)
    d2.add_((y * y).sum(1).unsqueeze(0))
    return d2.clamp_min_(0.0)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


class FeatureDetector(ABC):
    """Base class of feature-space detectors; see the module docstring for the interface contract.

    Subclasses define ``name`` (registry key), implement ``fit`` (wrapping the work in :meth:`_fit_scope`),
    :meth:`_score_layers`, and extend :meth:`get_config` with their constructor arguments. Fitted tensors go
    to ``self._tensors[layer][key]`` (per layer) or ``self._tensors[""][key]`` (global); plain-type fitted
    values to ``self._extra``.

    Args:
        reduction: ``"mean"`` (global average pool maps to ``(N, C)``), ``"flatten"`` (``(N, C*prod(spatial))``)
            or ``"none"`` (keep maps; only where the method supports it).
    """

    name: ClassVar[str] = ""
    reductions: ClassVar[tuple[str, ...]] = ("mean", "flatten")
    #: whether ``score`` needs the classifier's predicted labels.
    needs_pred_labels: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            DETECTORS[cls.name] = cls

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction: str = look_up_option(reduction, self.reductions)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self._fitted = False
        self._layer_shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._num_classes: int | None = None
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        self._extra: dict[str, Any] = {}
        self._cache: dict[tuple[str, str, torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def fitted(self) -> bool:
        return self._fitted

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The layers seen at ``fit`` (in order); empty before fitting."""
        return tuple(self._layer_shapes)

    @property
    def num_classes(self) -> int | None:
        return self._num_classes

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (plain Python types) that rebuild an equivalent unfitted detector."""
        return {"reduction": self.reduction}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        status = f"fitted on {list(self.layer_names)}" if self._fitted else "unfitted"
        return f"{type(self).__name__}({args}) [{status}]"

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() (or load_state_dict()) first.")

    def _get(self, layer: str, key: str, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Fitted tensor ``self._tensors[layer][key]`` on ``like``'s device and dtype (cached)."""
        src = self._tensors[layer][key]
        dtype = dtype or (like.dtype if src.is_floating_point() else src.dtype)
        ck = (layer, key, like.device, dtype)
        out = self._cache.get(ck)
        if out is None:
            out = src.to(device=like.device, dtype=dtype)
            self._cache[ck] = out
        return out

    # ------------------------------------------------------------------ validation
    def _reduce(self, f: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return pool_features({"f": f})["f"]
        if self.reduction == "flatten":
            return f.flatten(1)
        return f

    def _prepare(
        self, features: Features, name: str = "features", fitting: bool = False
    ) -> OrderedDict[str, torch.Tensor]:
        """Validate ``features`` and return them reduced, in fitted layer order.

        With ``fitting=True`` any non-empty set of layers is accepted; otherwise the layer names and per-sample
        shapes must match those recorded at fit.
        """
        if not isinstance(features, Mapping):
            raise TypeError(f"{name} must be a mapping layer_name -> Tensor, got {type(features).__name__}.")
        if len(features) == 0:
            raise ValueError(f"{name} is empty; pass at least one layer's features.")
        if not fitting:
            known = list(self._layer_shapes)
            for key in features:
                if key not in self._layer_shapes:
                    close = difflib.get_close_matches(str(key), known, n=3, cutoff=0.5)
                    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                    raise ValueError(
                        f"{name} has unknown layer {key!r}, not seen at fit() (fitted layers: {known}).{hint}"
                    )
            missing = [k for k in known if k not in features]
            if missing:
                raise ValueError(f"{name} is missing layer(s) {missing} that the detector was fitted on.")
            keys = known
        else:
            keys = list(features)
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        batch = None
        for key in keys:
            f = features[key]
            if not isinstance(key, str):
                raise TypeError(f"{name} keys must be layer names (str), got {type(key).__name__}.")
            if not isinstance(f, torch.Tensor):
                raise TypeError(f"{name}[{key!r}] must be a torch.Tensor, got {type(f).__name__}.")
            if f.ndim < 2 or (self.reduction == "none" and f.ndim > 5):
                raise ValueError(
                    f"{name}[{key!r}] must have shape (N, C, *spatial) or (N, D), got shape {tuple(f.shape)}."
                )
            if not f.is_floating_point():
                raise ValueError(f"{name}[{key!r}] must be a floating point tensor, got dtype {f.dtype}.")
            if f.shape[0] == 0 or f.numel() == 0:
                raise ValueError(f"{name}[{key!r}] is empty (shape {tuple(f.shape)}).")
            if batch is None:
                batch = f.shape[0]
            elif f.shape[0] != batch:
                raise ValueError(
                    f"{name}: all layers must have the same number of samples; {key!r} has {f.shape[0]}, "
                    f"{keys[0]!r} has {batch}."
                )
            f = self._reduce(f.detach())
            if not bool(torch.isfinite(f).all()):
                raise ValueError(f"{name}[{key!r}] contains NaN or Inf values.")
            if not fitting:
                expected = self._layer_shapes[key]
                got = tuple(f.shape[1:])
                ok = (
                    got == expected
                    if self.reduction != "none"
                    else (len(got) == len(expected) and got[0] == expected[0])
                )
                if not ok:
                    what = "per-sample shape" if self.reduction != "none" else "channels/spatial rank"
                    raise ValueError(
                        f"{name}[{key!r}] has {what} {got} after reduction={self.reduction!r}, but the detector was "
                        f"fitted on {expected}."
                    )
            out[key] = f
        return out

    @staticmethod
    def _num_samples(features: Mapping[str, torch.Tensor]) -> int:
        return next(iter(features.values())).shape[0]

    def _check_fit_labels(self, labels: Any, n: int, num_classes: int | None, name: str = "labels") -> torch.Tensor:
        if labels is None:
            raise ValueError(f"{type(self).__name__}.fit needs the class {name} of the training features.")
        y = check_labels(labels, n, num_classes, name=name)
        if int(y.min()) < 0:
            raise ValueError(f"{name} must be >= 0, got min {int(y.min())}.")
        return y

    def _check_pred_labels(self, pred_labels: Any, n: int, device: torch.device) -> torch.Tensor | None:
        if pred_labels is None:
            if self.needs_pred_labels:
                raise ValueError(f"{type(self).__name__}.score needs pred_labels (the classifier's predicted classes).")
            return None
        y = check_labels(pred_labels, n, self._num_classes, name="pred_labels")
        return y.to(device)

    @contextmanager
    def _fit_scope(self, features: Features) -> Iterator[OrderedDict[str, torch.Tensor]]:
        """Reset, validate and reduce the clean ``features``, record the layer shapes, and mark the detector
        fitted only if the body succeeds (a failed fit leaves it unfitted)."""
        self._reset()
        feats = self._prepare(features, "features", fitting=True)
        self._layer_shapes = OrderedDict((k, tuple(v.shape[1:])) for k, v in feats.items())
        try:
            yield feats
        except BaseException:
            self._reset()
            raise
        self._fitted = True

    # ------------------------------------------------------------------ fitting / scoring
    @abstractmethod
    def fit(self, features: Features, labels: torch.Tensor | None = None, **kwargs: Any) -> FeatureDetector:
        """Fit on clean training ``features`` (``layer -> (N, C, *spatial) or (N, D)``) and their ``(N,)`` class
        ``labels`` (required by class-conditional methods); method-specific keyword arguments (``adversarial``,
        ``noisy``, ``num_classes``) are documented by each detector. Returns ``self``."""

    @abstractmethod
    def _score_layers(
        self, features: OrderedDict[str, torch.Tensor], pred_labels: torch.Tensor | None
    ) -> OrderedDict[str, torch.Tensor]:
        """Per-layer ``(N,)`` scores of validated, reduced features."""

    def _combine(self, per_layer: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(per_layer.values())).mean(0)

    def score_layers(
        self, features: Features, pred_labels: torch.Tensor | None = None
    ) -> OrderedDict[str, torch.Tensor]:
        """Per-layer scores ``layer -> (N,)`` (higher = more adversarial), before combining over layers.

        Args:
            features: ``layer -> (N, C, *spatial) or (N, D)`` with the layers used at ``fit``.
            pred_labels: ``(N,)`` predicted classes (required where ``needs_pred_labels``).

        Raises:
            RuntimeError: if the detector is not fitted.
            ValueError: for unknown/missing layers, wrong shapes, NaN/Inf, or a wrong number of labels.
        """
        self._check_fitted()
        feats = self._prepare(features, "features")
        first = next(iter(feats.values()))
        pred = self._check_pred_labels(pred_labels, first.shape[0], first.device)
        with torch.no_grad():
            return self._score_layers(feats, pred)

    def score(self, features: Features, pred_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial score of every sample, ``(N,)``; higher = more adversarial.

        Args:
            features: ``layer -> (N, C, *spatial) or (N, D)`` with the layers used at ``fit``.
            pred_labels: ``(N,)`` predicted classes (required where ``needs_pred_labels``).

        Shape:
            returns ``(N,)`` on the device and in the floating dtype of the features.
        """
        return self._combine(self.score_layers(features, pred_labels))

    __call__ = score

    # ------------------------------------------------------------------ persistence
    def _extra_state(self) -> dict[str, Any]:
        return dict(self._extra)

    def _load_extra_state(self, extra: Mapping[str, Any]) -> None:
        self._extra = dict(extra)

    def state_dict(self) -> dict[str, Any]:
        """Configuration and fitted state as tensors and plain Python types (``weights_only``-loadable).

        Raises:
            RuntimeError: if the detector is not fitted.
        """
        self._check_fitted()
        return {
            "detector": self.name,
            "format_version": _FORMAT_VERSION,
            "config": self.get_config(),
            "layer_shapes": {k: list(v) for k, v in self._layer_shapes.items()},
            "layer_names": list(self._layer_shapes),
            "num_classes": self._num_classes,
            "extra": self._extra_state(),
            "tensors": {g: {k: t.detach().cpu().clone() for k, t in d.items()} for g, d in self._tensors.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> FeatureDetector:
        """Restore configuration and fitted state from :meth:`state_dict` output.

        Raises:
            ValueError: if ``state`` was written by another detector type or format version.
        """
        if not isinstance(state, Mapping) or "detector" not in state:
            raise ValueError("state is not a detector state dict (no 'detector' entry).")
        if state["detector"] != self.name:
            raise ValueError(f"state dict is for detector {state['detector']!r}, not {self.name!r}.")
        if state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported detector state format {state.get('format_version')!r}.")
        type(self).__init__(self, **state["config"])
        self._layer_shapes = OrderedDict(
            (k, tuple(int(s) for s in state["layer_shapes"][k])) for k in state["layer_names"]
        )
        self._num_classes = state["num_classes"]
        self._tensors = {g: dict(d) for g, d in state["tensors"].items()}
        self._load_extra_state(state["extra"])
        self._fitted = True
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write :meth:`state_dict` to ``path`` with ``torch.save``."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(cls: type[_T], path: str | os.PathLike) -> _T:
        """Load a detector saved with :meth:`save` (``weights_only=True``); on a subclass, the type must match."""
        det = load_detector(path)
        if not isinstance(det, cls):
            raise ValueError(f"{path} holds a {type(det).__name__}, not a {cls.__name__}.")
        return det

    def to(self: _T, device: torch.device | str) -> _T:
        """Move fitted tensors to ``device`` (scoring moves them on demand anyway)."""
        self._tensors = {g: {k: t.to(device) for k, t in d.items()} for g, d in self._tensors.items()}
        self._cache = {}
        return self


def load_detector(source: str | os.PathLike | Mapping[str, Any]) -> FeatureDetector:
    """Rebuild a fitted detector from a :meth:`FeatureDetector.save` file or a state dict.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for an unreadable file or an unknown detector type.
    """
    state = source if isinstance(source, Mapping) else safe_torch_load(source)
    if not isinstance(state, Mapping) or "detector" not in state:
        raise ValueError("not a detector state dict (no 'detector' entry).")
    cls = DETECTORS.get(state["detector"])
    if cls is None:
        raise ValueError(f"unknown detector type {state['detector']!r}; known: {sorted(DETECTORS)}.")
    det = cls.__new__(cls)
    return det.load_state_dict(state)
