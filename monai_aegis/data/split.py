# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Patient-grouped, label-stratified, seeded splits of a datalist.

Images of one patient are correlated (same anatomy, often near-duplicates), so a random image-level split
leaks the validation set into training. These helpers keep every patient in exactly one split, balance the
labels across splits, and give the same answer for the same items and seed whatever their input order.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["patient_grouped_partition", "patient_grouped_split"]


def _largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    """Integer counts summing to ``total`` and closest to ``total * fractions`` (ties to the earlier split)."""
    raw = [total * f for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in order[: total - sum(counts)]:
        counts[k] += 1
    return counts


def _label_key(value: Any) -> Hashable:
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else tuple(arr.reshape(-1).tolist())


def patient_grouped_partition(
    datalist: Sequence[Mapping[str, Any]],
    fractions: Sequence[float],
    *,
    group_key: str = "patient_id",
    label_key: str | None = "label",
    seed: int = 0,
) -> list[list[Mapping[str, Any]]]:
    """Partition ``datalist`` into ``len(fractions)`` patient-disjoint parts, stratified by label.

    Algorithm (deterministic, greedy like scikit-learn's ``StratifiedGroupKFold``, no dependency): every part
    has a target count of images per label, ``fraction * n_label`` rounded by largest remainder. Patient groups
    are shuffled with ``random.Random(seed)`` (after sorting by id, so input order does not matter), ordered by
    size (largest first, placed while there is room), and each goes to the part whose remaining room, relative
    to its targets, is largest for that group's labels (groups with mixed labels count each label). With one
    image per patient the parts hit their targets exactly; with larger groups they are off by about one group.

    Items without ``group_key`` (or with an empty value) are their own group (keyed by their image).

    Args:
        datalist: the items (dicts).
        fractions: the share of each part, non-negative, summing to 1 (e.g. ``(0.6, 0.2, 0.2)``).
        group_key: the key holding the patient id.
        label_key: the key holding the class label used for stratification (``None``: no stratification).
            Multi-label vectors are stratified by their exact label combination.
        seed: seed of the shuffle.

    Returns:
        one list per fraction; items keep their relative input order within each part.

    Raises:
        ValueError: empty datalist, invalid fractions, no item has ``group_key``, an item lacks ``label_key``,
            or a part with a positive fraction would be empty (too few patients).
    """
    if len(datalist) == 0:
        raise ValueError("datalist is empty; nothing to split.")
    fr = [float(f) for f in fractions]
    if len(fr) < 2 or any(not np.isfinite(f) or f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be >= 2 non-negative numbers summing to 1, got {list(fractions)}.")
    if not any(isinstance(it, Mapping) and it.get(group_key) not in (None, "") for it in datalist):
        raise ValueError(
            f"no item has a '{group_key}' value; pass group_key= naming the patient id key "
            f"(keys of the first item: {sorted(datalist[0]) if isinstance(datalist[0], Mapping) else '?'})."
        )

    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, it in enumerate(datalist):
        g = it.get(group_key)
        gid = (0, str(g)) if g not in (None, "") else (1, str(it.get("image", i)))
        groups[gid].append(i)

    labels: list[Hashable] = []
    for i, it in enumerate(datalist):
        if label_key is None:
            labels.append(0)
        elif label_key not in it:
            raise ValueError(f"datalist[{i}] has no '{label_key}' key to stratify on (pass label_key=None).")
        else:
            labels.append(_label_key(it[label_key]))
    classes = sorted(set(labels), key=repr)
    col = {c: j for j, c in enumerate(classes)}
    per_class = Counter(labels)
    # target[k, c]: images of class c wanted in part k (integers summing to the class count)
    target = np.array([_largest_remainder(per_class[c], fr) for c in classes], dtype=np.float64).T
    weight = np.where(target > 0, 1.0 / np.maximum(target, 1.0), 0.0)
    filled = np.zeros_like(target)
    tie = np.array([f for f in fr]) * 1e-9 - np.arange(len(fr)) * 1e-12  # prefer larger fraction, then lower index

    gids = sorted(groups)
    random.Random(seed).shuffle(gids)
    gids.sort(key=lambda g: -len(groups[g]))  # stable: shuffled order within equal sizes
    part_of = [0] * len(datalist)
    for g in gids:
        counts = np.zeros(len(classes))
        for i in groups[g]:
            counts[col[labels[i]]] += 1
        # relative remaining room of each part for this group's labels; a class not wanted in a part counts -1
        room = np.where(target > 0, (target - filled) * weight, -1.0)
        k = int(np.argmax(room @ counts + tie))
        filled[k] += counts
        for i in groups[g]:
            part_of[i] = k

    parts: list[list[Mapping[str, Any]]] = [[] for _ in fr]
    for i, k in enumerate(part_of):
        parts[k].append(datalist[i])
    empty = [k for k, f in enumerate(fr) if f > 0 and not parts[k]]
    if empty:
        raise ValueError(
            f"part(s) {empty} of fractions {fr} came out empty: {len(groups)} patient group(s) are too few to split."
        )
    return parts


def patient_grouped_split(
    datalist: Sequence[Mapping[str, Any]],
    val_fraction: float = 0.2,
    *,
    group_key: str = "patient_id",
    label_key: str | None = "label",
    seed: int = 0,
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Split ``datalist`` into train and validation parts with no patient in both, stratified by label.

    See :func:`patient_grouped_partition` for the algorithm; this is its two-part case.

    Args:
        datalist: the items (dicts), e.g. from :func:`kermany_datalist`.
        val_fraction: share of images for validation, in ``(0, 1)``.
        group_key: the key holding the patient id.
        label_key: the key holding the class label (``None``: no stratification).
        seed: seed of the shuffle.

    Returns:
        ``(train, val)``.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``, or see :func:`patient_grouped_partition`.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
    train, val = patient_grouped_partition(
        datalist, (1.0 - float(val_fraction), float(val_fraction)), group_key=group_key, label_key=label_key, seed=seed
    )
    return train, val
