import numpy as np
import pytest
import torch

from monai_aegis.evaluation.datasets import load_evaluation_splits


def _png(path, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 24), value, dtype=np.uint8)).save(path)


def test_kermany_splits_are_patient_disjoint_and_cached(tmp_path):
    root = tmp_path / "chest_xray"
    for split, n in (("train", 12), ("test", 3)):
        for c, (cls, pattern) in enumerate((("NORMAL", "IM-{:04d}-0001.png"), ("PNEUMONIA", "person{}_bacteria_1.png"))):
            for i in range(n):
                _png(root / split / cls / pattern.format(i), 40 * c + i)
    # a patient with two images must stay in one part
    _png(root / "train" / "PNEUMONIA" / "person0_virus_2.png", 200)
    cache = tmp_path / "cache"
    splits = load_evaluation_splits("kermany", root, spatial_size=8, val_fraction=0.25, holdout_fraction=0.25,
                                    cache_dir=cache)
    assert set(splits) == {"train", "val", "holdout", "test"}
    assert sum(len(v[1]) for k, v in splits.items() if k != "test") == 25 and len(splits["test"][1]) == 6
    for x, y in splits.values():
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert set(y.tolist()) <= {0, 1}
    # each image of the training folder is in exactly one part; the two images of person0 (values 40 and 200) together
    vals = {k: set((v[0].mean((1, 2, 3)) * 255).round().int().tolist()) for k, v in splits.items() if k != "test"}
    holder = [k for k, v in vals.items() if 200 in v]
    assert len(holder) == 1 and 40 in vals[holder[0]]
    assert len(list(cache.glob("*.pt"))) == 1
    again = load_evaluation_splits("kermany", root, spatial_size=8, val_fraction=0.25, holdout_fraction=0.25,
                                   cache_dir=cache)
    assert all(torch.equal(again[k][0], splits[k][0]) for k in splits)


def test_sample_and_errors():
    s = load_evaluation_splits("sample", spatial_size=16)
    assert {k: len(v[1]) for k, v in s.items()} == {"train": 192, "val": 64, "test": 64}
    with pytest.raises(ValueError, match="root"):
        load_evaluation_splits("kermany")
    with pytest.raises(ValueError):
        load_evaluation_splits("imagenet", "/tmp")
