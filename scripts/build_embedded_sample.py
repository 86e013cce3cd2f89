#!/usr/bin/env python
# Copyright (c) monai_aegis contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
"""Regenerate the embedded chest X-ray sample ``monai_aegis/data/sample`` from the shared Kermany data.

Deterministic (seeded) selection from the official Kermany *train* split in ``<shared>/chest_xray``:

1. list it with :func:`monai_aegis.data.kermany_datalist` and join ``manifest.csv`` for the source size;
2. drop images whose original shorter side was under 256 px (upsampled strips, e.g. 445x140);
3. per class, shuffle the patient ids (sorted first) with ``random.Random(seed)`` and keep the first
   ``per_class`` patients, one image each (picked with the same generator) -- so no patient repeats and the
   two known duplicate pairs of the train split cannot both enter;
4. assign ``split`` with :func:`monai_aegis.data.patient_grouped_partition` (0.6 / 0.2 / 0.2, same seed):
   one image per patient makes it exact, train 96+96, val 32+32, test 32+32;
5. downsample 256 -> ``size`` with Pillow Lanczos, 8-bit grayscale PNG (``optimize=True``), and write
   ``manifest.csv`` and ``ATTRIBUTION.md``.

Usage::

    python scripts/build_embedded_sample.py [--shared ../shared/data] [--out monai_aegis/data/sample]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # use this checkout's monai_aegis, not an installed copy
    sys.path.insert(0, str(REPO_ROOT))

from monai_aegis.data import KERMANY_CLASSES, kermany_datalist, patient_grouped_partition  # noqa: E402
from monai_aegis.utils import atomic_write, atomic_write_text  # noqa: E402

__all__ = ["ATTRIBUTION", "MANIFEST_COLUMNS", "build", "render_image", "select_sample"]

DEFAULT_SHARED = Path(os.environ.get("AEGIS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DEFAULT_OUT = REPO_ROOT / "monai_aegis" / "data" / "sample"
MANIFEST_COLUMNS = ("file", "label", "label_idx", "patient_id", "subtype", "source_file", "split")
SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
SEED = 20240601
PER_CLASS = 160
SIZE = 128
MIN_SOURCE_SIDE = 256

ATTRIBUTION = """# Embedded sample: attribution and licence

The images in `images/` are a small subset of the chest X-ray part of

> Kermany, Daniel; Zhang, Kang; Goldbaum, Michael (2018). "Labeled Optical Coherence Tomography (OCT) and
> Chest X-Ray Images for Classification". Mendeley Data, v2. https://doi.org/10.17632/rscbjbr9sj.2

described in

> Kermany, D. S., Goldbaum, M., Cai, W., et al. (2018). "Identifying Medical Diagnoses and Treatable Diseases
> by Image-Based Deep Learning". *Cell* 172(5):1122-1131. https://doi.org/10.1016/j.cell.2018.02.010

Pediatric chest X-rays (patients aged one to five) from Guangzhou Women and Children's Medical Center, as
distributed in the Kaggle dataset "Chest X-Ray Images (Pneumonia)" by Paul Mooney.

**Licence:** Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/. The images are redistributed here under that licence, with
the changes listed below. The licence of monai_aegis (Apache 2.0) does not apply to these images.

## Provenance

Copied from the public GitHub repository `lecuong1502/BTL_Machine_Learning`, folder `train/` at commit
`fd0ada4`, which holds the official Kermany *train* split (only files still at original resolution were used).

## Changes made

1. Original JPEG -> 8-bit grayscale; shorter side resized to 256 px (Lanczos); centre crop 256x256; PNG
   (the project's evaluation copy).
2. For this sample: {per_class} NORMAL and {per_class} PNEUMONIA images from the official train split, one image
   per patient (patient id parsed from the file name), images whose original shorter side was under
   {min_side} px excluded, selected with seed {seed}; downsampled to {size}x{size} (Lanczos) and saved as 8-bit
   grayscale PNG. File names are the original Kermany names with a `.png` extension.
3. `manifest.csv` adds a `split` column (train / val / test) that is a patient-disjoint, label-balanced
   re-split of these training images made for this package; it is not the official Kermany split.

## Caveats

Kermany labels come from clinical grading and are known to be noisy; some images carry text markers or odd
crops. The sample is for tests, demos and quick benchmarks, not for clinical conclusions.

Regenerate with `python scripts/build_embedded_sample.py` (needs the shared data).
"""


def _read_manifest(chest_root: Path) -> dict[str, dict[str, str]]:
    with open(chest_root / "manifest.csv", newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def select_sample(
    shared: Path = DEFAULT_SHARED, per_class: int = PER_CLASS, seed: int = SEED, size: int = SIZE
) -> list[dict[str, Any]]:
    """The sample's manifest rows (dicts with :data:`MANIFEST_COLUMNS`), in manifest order; nothing is written."""
    chest = Path(shared) / "chest_xray"
    meta = _read_manifest(chest)
    items = kermany_datalist(chest, "train")
    rng = random.Random(seed)
    chosen: list[dict[str, Any]] = []
    for label, cls in enumerate(KERMANY_CLASSES):
        by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for it in items:
            if it["label"] != label:
                continue
            rel = Path(it["image"]).relative_to(chest.resolve()).as_posix()
            row = meta.get(rel)
            if row is None:
                raise ValueError(f"'{rel}' is not in {chest / 'manifest.csv'}.")
            if row["patient_id"] != it["patient_id"]:
                raise ValueError(
                    f"patient id mismatch for '{rel}': {it['patient_id']} vs manifest {row['patient_id']}."
                )
            if min(int(row["source_w"]), int(row["source_h"])) < MIN_SOURCE_SIDE:
                continue
            by_patient[it["patient_id"]].append({**it, "source_file": rel})
        patients = sorted(by_patient)
        if len(patients) < per_class:
            raise ValueError(f"only {len(patients)} {cls} patients available, need {per_class}.")
        rng.shuffle(patients)
        for pid in patients[:per_class]:
            chosen.append(rng.choice(sorted(by_patient[pid], key=lambda d: d["image"])))
    parts = patient_grouped_partition(chosen, FRACTIONS, seed=seed)
    rows = []
    for split, part in zip(SPLITS, parts):
        for it in part:
            rows.append(
                {
                    "file": f"images/{Path(it['image']).stem}.png",
                    "label": it["class_name"],
                    "label_idx": it["label"],
                    "patient_id": it["patient_id"],
                    "subtype": it["subtype"],
                    "source_file": it["source_file"],
                    "split": split,
                }
            )
    order = {s: i for i, s in enumerate(SPLITS)}
    rows.sort(key=lambda r: (order[r["split"]], r["label_idx"], r["file"]))
    return rows


def render_image(source: Path, size: int = SIZE) -> bytes:
    """PNG bytes of ``source`` as ``size`` x ``size`` 8-bit grayscale (Lanczos, optimised)."""
    from PIL import Image

    with Image.open(source) as im:
        small = im.convert("L").resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def build(shared: Path = DEFAULT_SHARED, out: Path = DEFAULT_OUT, per_class: int = PER_CLASS, seed: int = SEED,
          size: int = SIZE) -> list[dict[str, Any]]:
    """Write the sample (images, ``manifest.csv``, ``ATTRIBUTION.md``) to ``out``; stale images are removed."""
    rows = select_sample(shared, per_class, seed, size)
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    keep = {Path(r["file"]).name for r in rows}
    for old in img_dir.glob("*.png"):
        if old.name not in keep:
            old.unlink()
    chest = Path(shared) / "chest_xray"
    for r in rows:
        data = render_image(chest / r["source_file"], size)
        atomic_write(out / r["file"], lambda tmp, data=data: Path(tmp).write_bytes(data))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "manifest.csv", text.getvalue())
    atomic_write_text(
        out / "ATTRIBUTION.md",
        ATTRIBUTION.format(per_class=per_class, min_side=MIN_SOURCE_SIDE, seed=seed, size=size),
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="shared data folder (holds chest_xray/)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--per-class", type=int, default=PER_CLASS)
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--size", type=int, default=SIZE)
    a = p.parse_args(argv)
    rows = build(a.shared, a.out, a.per_class, a.seed, a.size)
    total = sum(f.stat().st_size for f in Path(a.out).rglob("*") if f.is_file())
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        counts[(r["split"], r["label"])] += 1
    print(f"wrote {len(rows)} images to {a.out} ({total / 1e6:.2f} MB)")
    for s in SPLITS:
        print(f"  {s}: " + ", ".join(f"{c}={counts[(s, c)]}" for c in KERMANY_CLASSES))


if __name__ == "__main__":
    main()
