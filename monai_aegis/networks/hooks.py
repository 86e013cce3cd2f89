# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Scoped, removable forward hooks that capture intermediate features of any ``nn.Module``.

Unlike MONAI's ``ModelWithHooks`` the hooks are removed on exit, so the classifier is left exactly as it was
(it can still be scripted, saved and used elsewhere). Unlike FX feature extraction no tracing is involved, so
models with data-dependent control flow (several MONAI networks) work too.
"""

from __future__ import annotations

import contextlib
import difflib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..utils.precision import REDUCED_DTYPES, run_in_precision

__all__ = [
    "INPUT_LAYER",
    "LAYER_PRESETS",
    "FeatureHooks",
    "default_layer_names",
    "hooked_batches",
    "pool_features",
    "resolve_layer_names",
]

#: Pseudo layer name of the model's *input* (for the classifier behind a Cushion: the cushioned image). Hooking it
#: gives a Shield a branch that reads the image itself -- a small detector CNN of its own -- beside the classifier's
#: features.
INPUT_LAYER = "<input>"

#: Hooked layers per backbone. The paper's choices (1-indexed): torchvision ResNet-50 residual (bottleneck)
#: blocks 1, 4, 8, 14 -- the first block of each of the four stages -- and VGG-16 ReLU activations
#: 3, 6, 9, 12 (``features.6/13/20/27``). The others are our defaults: one layer per resolution stage,
#: shallow to deep.
LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "resnet50": ("layer1.0", "layer2.0", "layer3.0", "layer4.0"),
    "vgg16": ("features.6", "features.13", "features.20", "features.27"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet34": ("layer1", "layer2", "layer3", "layer4"),
    "monai_resnet": ("layer1", "layer2", "layer3", "layer4"),
    "monai_densenet": ("features.transition1", "features.transition2", "features.transition3", "features.norm5"),
    "small_vgg": ("block1", "block2", "block3", "block4"),
    # first block of each down-sampling stage after the stem (at 1/4 ... 1/32), as ResNet-50's 1/4/8/14
    "efficientnet_lite0": ("backbone._blocks.1", "backbone._blocks.3", "backbone._blocks.5", "backbone._blocks.11"),
}


def default_layer_names(model: nn.Module) -> tuple[str, ...]:
    """Return the preset layer names for a known backbone, or raise ``ValueError`` naming the options.

    Recognises a model that names its own preset in a ``layer_preset`` attribute (e.g.
    :class:`~monai_aegis.networks.nets.EfficientNetLite`), torchvision ``ResNet`` (by block type and depth), ``VGG``
    (16 conv layers), MONAI ``ResNet``, MONAI ``DenseNet`` (any depth) and
    :func:`~monai_aegis.networks.nets.small_vgg`. For anything else, pass layer names explicitly.
    """
    own = getattr(model, "layer_preset", None)
    if own is not None:
        return tuple(own)
    cls = type(model)
    module = cls.__module__
    names = {n for n, _ in model.named_modules()}
    if module.startswith("torchvision.models.resnet"):
        blocks = [n for n in names if n.count(".") == 1 and n.startswith("layer")]
        if len(blocks) == 16 and "layer1.0.conv3" in names:
            return LAYER_PRESETS["resnet50"]
        return LAYER_PRESETS["resnet18"]
    if module.startswith("torchvision.models.vgg"):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if len(convs) == 13:
            return LAYER_PRESETS["vgg16"]
        relus = [f"features.{i}" for i, m in enumerate(getattr(model, "features", [])) if isinstance(m, nn.ReLU)]
        if len(relus) >= 4:
            step = len(relus) // 4
            return tuple(relus[step - 1 :: step][:4])
    if module.startswith("monai.networks.nets.resnet"):
        return LAYER_PRESETS["monai_resnet"]
    if module.startswith("monai.networks.nets.densenet"):
        return LAYER_PRESETS["monai_densenet"]
    if isinstance(model, nn.Sequential) and set(LAYER_PRESETS["small_vgg"]) <= names:
        return LAYER_PRESETS["small_vgg"]
    raise ValueError(
        f"no layer preset for {cls.__name__} ({module}); pass layer names explicitly "
        f"(presets exist for: {', '.join(LAYER_PRESETS)})."
    )


def resolve_layer_names(model: nn.Module, layer_names: Sequence[str] | str | None) -> tuple[str, ...]:
    """Turn ``layer_names`` into a validated tuple of sub-module names of ``model``.

    Args:
        model: the network.
        layer_names: explicit names (``"layer1.0"``; :data:`INPUT_LAYER` for the model's input), a preset key of
            :data:`LAYER_PRESETS`, or ``None`` for :func:`default_layer_names`.

    Raises:
        ValueError: for an unknown name (listing close matches), a duplicate, or an empty list.
    """
    if layer_names is None:
        return default_layer_names(model)
    if isinstance(layer_names, str):
        if layer_names in LAYER_PRESETS:
            layer_names = LAYER_PRESETS[layer_names]
        else:
            layer_names = (layer_names,)
    layer_names = tuple(layer_names)
    if not layer_names:
        raise ValueError("layer_names must name at least one sub-module.")
    if len(set(layer_names)) != len(layer_names):
        raise ValueError(f"layer_names contains duplicates: {list(layer_names)}.")
    available = [n for n, _ in model.named_modules() if n]
    known = set(available)
    for name in layer_names:
        if name not in known and name != INPUT_LAYER:
            close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"unknown layer name {name!r} for {type(model).__name__}.{hint} "
                f"Use [n for n, _ in model.named_modules()] to list the {len(available)} sub-modules."
            )
    return layer_names


class FeatureHooks:
    """Capture the outputs of named sub-modules through forward hooks.

    Usable as a context manager (hooks are attached on entry and removed on exit) or manually with
    :meth:`attach` / :meth:`remove`. After a forward pass, :attr:`features` maps each layer name (in the
    order given) to that layer's output; gradients flow through them unless ``detach=True``.

    Example::

        with FeatureHooks(model, ["layer1", "layer4"]) as hooks:
            logits = model(x)
            f4 = hooks.features["layer4"]

        logits, feats = FeatureHooks(model, "resnet18").run(x)   # attach, forward, remove

    Args:
        model: any ``nn.Module``; it is not modified apart from the temporary hooks.
        layer_names: sub-module names, a :data:`LAYER_PRESETS` key, or ``None`` for the backbone's preset;
            :data:`INPUT_LAYER` captures the model's input (a forward pre-hook on ``model``).
        detach: store detached outputs (no autograd graph is kept).
        transform: optional callable applied to each captured output (e.g. pooling) before storing it.

    Under ``torch.autocast`` (the library's ``amp`` option) a layer's reduced-precision output is stored in float32,
    so whatever reads the features (the Shield, a detector, an objective) runs in full precision; gradients flow
    back through the cast into the reduced-precision classifier.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_names: Sequence[str] | str | None = None,
        detach: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise ValueError(
                f"cannot hook {type(model).__name__}: forward hooks do not run inside TorchScript models. Load the "
                "eager model instead (architecture + state dict), e.g. the bundle's network_def + network_checkpoint."
            )
        self.model = model
        self.layer_names = resolve_layer_names(model, layer_names)
        self.detach = detach
        self.transform = transform
        self._modules = dict(model.named_modules())
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.features: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            self._store(name, output)

        return hook

    def _make_input_hook(self) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            self._store(INPUT_LAYER, inputs[0] if isinstance(inputs, tuple) and inputs else inputs)

        return hook

    def _store(self, name: str, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"layer {name!r} returned {type(output).__name__}; FeatureHooks needs a tensor output.")
        if self.detach:
            output = output.detach()
        if output.dtype in REDUCED_DTYPES and torch.is_autocast_enabled(output.device.type):
            output = output.float()  # under autocast features leave in float32, as the logits do (utils.precision)
        if self.transform is not None:
            output = self.transform(output)
        self.features[name] = output

    def attach(self) -> FeatureHooks:
        """Register the hooks (idempotent)."""
        if not self._handles:
            self._handles = [
                self.model.register_forward_pre_hook(self._make_input_hook()) if n == INPUT_LAYER
                else self._modules[n].register_forward_hook(self._make_hook(n))
                for n in self.layer_names
            ]
        return self

    def remove(self) -> None:
        """Remove every hook this object registered and drop the captured features."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.features = OrderedDict()

    def clear(self) -> None:
        """Drop captured features (keeps hooks attached)."""
        self.features = OrderedDict()

    def __enter__(self) -> FeatureHooks:
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __del__(self) -> None:  # never leave hooks behind on a model that outlives us
        try:
            self.remove()
        except Exception:
            pass

    def collect(self) -> OrderedDict[str, torch.Tensor]:
        """Return the features of the last forward pass in ``layer_names`` order.

        Raises:
            RuntimeError: if a hooked layer did not run (e.g. it is not on the forward path).
        """
        missing = [n for n in self.layer_names if n not in self.features]
        if missing:
            raise RuntimeError(f"layers {missing} did not run during the forward pass; they are not on its path.")
        return OrderedDict((n, self.features[n]) for n in self.layer_names)

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, OrderedDict[str, torch.Tensor]]:
        """Run ``model(x)`` with the hooks attached; return ``(output, features)``. Hooks stay as they were."""
        was_attached = self.attached
        self.attach()
        self.features = OrderedDict()
        try:
            out = self.model(x, *args, **kwargs)
            return out, self.collect()
        finally:
            if not was_attached:
                self.remove()

    run = __call__

    def __iter__(self) -> Iterator[str]:
        return iter(self.layer_names)

    def __len__(self) -> int:
        return len(self.layer_names)


@torch.no_grad()
def hooked_batches(
    model: nn.Module,
    x: torch.Tensor,
    layer_names: Sequence[str] | str,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    device: Any = None,
    amp: bool | str | None = None,
) -> Iterator[tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]]:
    """The one batched hooked forward pass: ``model(preprocess(x_b))`` for each batch ``x_b`` of ``x`` (moved to
    ``device`` when given), without autograd, yielding ``(logits, features of layer_names)`` per batch -- the
    features the Shield, the baselines, the stress test and the feature-space attacks read.

    The modules' train/eval modes are left as they are (callers that need eval mode set it). ``amp`` runs
    ``model`` alone in reduced precision (:func:`~monai_aegis.utils.resolve_amp`); logits and features are float32.
    An empty ``layer_names`` (a classifier judged without Shield or baselines) yields the logits with no features.
    """
    hooked = isinstance(layer_names, str) or len(layer_names) > 0
    with FeatureHooks(model, layer_names) if hooked else contextlib.nullcontext() as hooks:
        for xb in x.split(int(batch_size)):
            if hooks is not None:
                hooks.clear()
            xb = xb if device is None else xb.to(device)
            logits = run_in_precision(model, preprocess(xb) if preprocess is not None else xb, amp)
            yield logits, hooks.collect() if hooks is not None else OrderedDict()


def pool_features(features: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Global-average-pool every feature map to a ``(B, C)`` vector (``(B, C)`` inputs pass through).

    This is the per-layer representation used by the feature-space attacks (Fea, HFC) and the baseline
    detectors (KD, LID, MAHA).
    """
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, f in features.items():
        if f.ndim < 2:
            raise ValueError(f"feature {name!r} must be (B, C, *spatial) or (B, C), got shape {tuple(f.shape)}.")
        out[name] = f.flatten(2).mean(-1) if f.ndim > 2 else f
    return out
