# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Reading batches: the one way every part of the package takes images (and labels) from what a user hands it.

Accepted everywhere: a ``(N, C, *spatial)`` image tensor (images only), an ``(images, labels)`` tensor pair, or an
iterable of batches -- tensors, ``(image, label)`` tuples / lists, or MONAI dictionaries (``image_key`` /
``label_key``), e.g. a ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["batch_ids", "iter_batches", "stack_batches", "stack_images", "tensor_loader"]


def _is_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(v, torch.Tensor) for v in data)


def iter_batches(
    data: Any,
    batch_size: int | None = 32,
    image_key: str = "image",
    label_key: str = "label",
    labels: bool = False,
) -> Iterator[Any]:
    """Yield image batches, or ``(images, labels)`` pairs with ``labels=True``.

    Args:
        data: see the module docstring.
        batch_size: chunk size for tensor inputs (``None``: the whole tensor as one batch); an iterable's own
            batches are yielded as they come.
        image_key, label_key: keys of dictionary batches.
        labels: yield ``(images, labels)``; an input without labels is then an error.

    Raises:
        KeyError: a dictionary batch without ``image_key`` / ``label_key``.
        TypeError: a batch that is not one of the accepted forms, or images without labels when labels are needed.
    """

    def chunks(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (t,) if batch_size is None else t.split(int(batch_size))

    if isinstance(data, torch.Tensor):
        if labels:
            raise TypeError("labels are needed: give (images, labels) or batches with labels, not an image tensor.")
        yield from chunks(data)
        return
    if _is_pair(data):
        x, y = data
        if labels:
            yield from zip(chunks(x), chunks(y))
        else:
            yield from chunks(x)
        return
    for batch in data:
        if isinstance(batch, Mapping):
            missing = [k for k in ((image_key, label_key) if labels else (image_key,)) if k not in batch]
            if missing:
                raise KeyError(f"batch has no key {missing[0]!r}; keys are {list(batch)}.")
            x, y = batch[image_key], batch.get(label_key)
        elif isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        elif isinstance(batch, torch.Tensor):
            x, y = batch, None
        else:
            raise TypeError(f"expected image batches as tensors, pairs or dicts, got {type(batch).__name__}.")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected image batches as tensors, got {type(x).__name__}.")
        if labels:
            if y is None:
                raise TypeError("labels are needed, but a batch holds images only.")
            yield x, y
        else:
            yield x


def _stack(data: Any, max_items: int | None, image_key: str, label_key: str, name: str,
           labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The one stacking loop of :func:`stack_batches` and :func:`stack_images`."""
    xs, ys, n = [], [], 0
    for batch in iter_batches(data, None, image_key, label_key, labels=labels):
        x, y = batch if labels else (batch, None)
        x = torch.as_tensor(x).as_subclass(torch.Tensor).detach().float().cpu()
        xs.append(x)
        if labels:
            ys.append(torch.as_tensor(y).as_subclass(torch.Tensor).detach().reshape(x.shape[0], -1)[:, 0].long().cpu())
        n += x.shape[0]
        if max_items is not None and n >= max_items:
            break
    if not xs or n == 0:
        raise ValueError(f"{name} is empty (no images).")
    x = torch.cat(xs)  # always a new tensor: callers may write into it
    if x.ndim < 4:
        raise ValueError(f"{name} images must be a non-empty (N, C, *spatial) batch, got shape {tuple(x.shape)}.")
    y = torch.cat(ys) if labels else None
    if max_items is not None:
        x, y = x[:max_items], (None if y is None else y[:max_items])
    return x, y


def stack_batches(
    data: Any,
    max_items: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    name: str = "data",
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of ``data`` as ``(images (N, C, *spatial) float32, labels (N,) int64)`` on the CPU, plain tensors (no
    MONAI metadata), stopping once ``max_items`` are read (then truncated to exactly that many).

    Raises:
        ValueError: no images, or images that are not ``(N, C, *spatial)``.
    """
    x, y = _stack(data, max_items, image_key, label_key, name, labels=True)
    assert y is not None
    return x, y


def stack_images(data: Any, image_key: str = "image", name: str = "data") -> torch.Tensor:
    """All images of ``data`` (labelled or not: tensors, pairs, loaders, dict batches) as one plain float32 CPU tensor
    ``(N, C, *spatial)``, a new tensor (as :func:`stack_batches`).

    Raises:
        ValueError: no images, or images that are not ``(N, C, *spatial)``.
    """
    return _stack(data, None, image_key, "label", name, labels=False)[0]


def tensor_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 32,
    transform: Any = None,
    shuffle: bool = False,
    seed: int = 0,
    image_key: str = "image",
    label_key: str = "label",
    id_key: str | None = "id",
) -> Any:
    """A MONAI ``DataLoader`` of ``{image_key, label_key}`` batches over in-memory tensors: what the engines and
    bundles take (:func:`monai_aegis.engines.train_classifier`, ``ShieldTrainer``), built from the tensors the
    evaluation splits hold.

    Args:
        images: ``(N, C, *spatial)``.
        labels: ``(N,)`` class indices.
        batch_size: batch size.
        transform: a dictionary transform applied per item (e.g.
            :func:`monai_aegis.transforms.classification_augmentation`), or ``None``.
        shuffle: reshuffle every epoch, from a generator seeded with ``seed`` (reproducible).
        seed: seed of the shuffle.
        image_key, label_key: the batch keys.
        id_key: key of each image's index in ``images`` (what per-image state, e.g. the Shield training's
            persistent starts, is keyed on; see :func:`batch_ids`), or ``None`` for none.

    Raises:
        ValueError: images and labels of different lengths, or no images.
    """
    from monai.data import DataLoader, Dataset

    if images.ndim < 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, *spatial) batch, got shape {tuple(images.shape)}.")
    if labels.reshape(-1).shape[0] != images.shape[0]:
        raise ValueError(f"got {labels.numel()} labels for {images.shape[0]} images.")
    items = [{image_key: xi, label_key: int(yi)} for xi, yi in zip(images, labels.reshape(-1).tolist())]
    if id_key is not None:
        for i, item in enumerate(items):
            item[id_key] = i
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return DataLoader(Dataset(items, transform), batch_size=int(batch_size), shuffle=bool(shuffle), generator=generator)


def batch_ids(batch: Any, n: int, id_key: str = "id", image_key: str = "image") -> list[str] | None:
    """Stable per-image ids of a dict batch of ``n`` images, for state kept per image across epochs: the batch's
    ``id_key`` entries (:func:`tensor_loader` adds them), else the source files of the images (MONAI metadata
    ``filename_or_obj`` of images loaded from files), else ``None``."""
    if not isinstance(batch, Mapping):
        return None
    ids = batch.get(id_key)
    if ids is not None:
        ids = ids.reshape(-1).tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if len(ids) == n:
            return [str(i) for i in ids]
    meta = getattr(batch.get(image_key), "meta", None)
    if isinstance(meta, Mapping):
        files = meta.get("filename_or_obj")
        if isinstance(files, (list, tuple)) and len(files) == n and all(files):
            return [str(f) for f in files]
    return None
