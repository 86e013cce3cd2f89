import csv
import importlib.util
import io
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import LoadImaged

from monai_aegis.data import (
    check_datalist,
    load_sample_arrays,
    load_sample_datalist,
    sample_dir,
)
from monai_aegis.transforms import classification_transforms

REPO = Path(__file__).resolve().parents[2]


def test_sample_files_and_attribution():
    d = sample_dir()
    text = (d / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in text and "10.17632/rscbjbr9sj.2" in text and "Kermany" in text
    pngs = sorted(p.name for p in (d / "images").glob("*.png"))
    assert len(pngs) == 320
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert total < 4_000_000
    with open(d / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "label_idx", "patient_id", "subtype", "source_file", "split"]
    assert sorted(Path(r["file"]).name for r in rows) == pngs


def test_balanced_patient_disjoint_splits():
    items = load_sample_datalist()
    assert len(items) == 320
    counts = Counter((it["split"], it["label"]) for it in items)
    assert counts == {("train", 0): 96, ("train", 1): 96, ("val", 0): 32, ("val", 1): 32,
                      ("test", 0): 32, ("test", 1): 32}
    patients = {s: {it["patient_id"] for it in items if it["split"] == s} for s in ("train", "val", "test")}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert all(it["class_name"] == ("PNEUMONIA" if it["label"] else "NORMAL") for it in items)
    assert all(it["source_file"].startswith(f"train/{it['class_name']}/") for it in items)
    val = load_sample_datalist("val")
    assert len(val) == 64 and all(Path(it["image"]).is_absolute() and it["split"] == "val" for it in val)
    with pytest.raises(ValueError, match="unknown sample split 'validation'"):
        load_sample_datalist("validation")


def test_every_file_loads_and_is_8bit_128():
    items = load_sample_datalist()
    check_datalist(items, num_classes=2, try_load=True)
    loader = LoadImaged("image", dtype=None, ensure_channel_first=True)
    for it in items[::40]:
        img = loader(dict(it))["image"]
        assert img.shape == (1, 128, 128) and img.dtype == torch.uint8


def test_pipeline_gives_unit_range_tensors_of_requested_size():
    ds = Dataset(load_sample_datalist("test")[::8], classification_transforms(spatial_size=48))
    batch = next(iter(DataLoader(ds, batch_size=8)))
    x = batch["image"]
    assert x.shape == (8, 1, 48, 48) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert batch["label"].dtype == torch.long


def test_arrays_match_pipeline_and_are_fresh_copies():
    x, y = load_sample_arrays("val", spatial_size=32)
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert y.tolist() == [it["label"] for it in load_sample_datalist("val")]
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    tf = classification_transforms(spatial_size=32)
    items = load_sample_datalist("val")
    for i in (0, 31, 63):
        torch.testing.assert_close(x[i], tf(items[i])["image"], atol=1e-5, rtol=0)
    x[:] = -1.0
    again, _ = load_sample_arrays("val", spatial_size=32)
    assert float(again.min()) >= 0.0  # the cache was not modified through the returned tensor
    full, labels = load_sample_arrays(None, spatial_size=(128, 128))
    assert full.shape == (320, 1, 128, 128) and int(labels.sum()) == 160
    with pytest.raises(ValueError, match="spatial_size"):
        load_sample_arrays("train", spatial_size=0)


@pytest.mark.shared_data
def test_build_script_reproduces_manifest(shared_data):
    script = REPO / "scripts" / "build_embedded_sample.py"
    spec = importlib.util.spec_from_file_location("build_embedded_sample", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.select_sample(shared_data)
    with open(sample_dir() / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert [{k: str(v) for k, v in r.items()} for r in rows] == manifest
    # images are the Lanczos-downsampled shared files
    from PIL import Image

    for r in rows[::80]:
        fresh = np.asarray(Image.open(io.BytesIO(mod.render_image(shared_data / "chest_xray" / r["source_file"]))))
        embedded = np.asarray(Image.open(sample_dir() / r["file"]))
        np.testing.assert_array_equal(fresh, embedded)
