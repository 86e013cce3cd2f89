"""The one dataset split rule (``monai_aegis.data.dataset_splits``), shared by the bundles and the evaluation."""

from pathlib import Path

import numpy as np
import pytest

from monai_aegis.bundle import bundle_datalists
from monai_aegis.data import dataset_splits, find_labels_csv, kermany_datalist


@pytest.fixture
def big_kermany(tmp_path, write_png):
    """20 NORMAL (one patient with two images) and 20 PNEUMONIA training images, 2 + 2 test images."""
    root = tmp_path / "chest_xray"
    for i in range(19):
        write_png(root / "train" / "NORMAL" / f"IM-{i:04d}-0001.png", seed=i)
    write_png(root / "train" / "NORMAL" / "IM-0000-0002.png", seed=99)
    for i in range(20):
        write_png(root / "train" / "PNEUMONIA" / f"person{i}_bacteria_{i}.png", seed=100 + i)
    for j, name in enumerate(("NORMAL/IM-9000-0001.png", "NORMAL/IM-9001-0001.png",
                              "PNEUMONIA/person900_virus_1.png", "PNEUMONIA/person901_virus_2.png")):
        write_png(root / "test" / name, seed=200 + j)
    return root


def _images(items):
    return [it["image"] for it in items]


def test_kermany_parts_are_patient_disjoint_and_cover_the_train_split(big_kermany):
    parts = dataset_splits("kermany", big_kermany, val_fraction=0.2, holdout_fraction=0.25, seed=3)
    assert list(parts) == ["train", "val", "holdout", "test"]
    train_all = _images(kermany_datalist(big_kermany, "train"))
    inner = [_images(parts[k]) for k in ("train", "val", "holdout")]
    assert sorted(sum(inner, [])) == sorted(train_all)
    patients = [{it["patient_id"] for it in parts[k]} for k in ("train", "val", "holdout")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert [len(p) for p in inner] == [22, 8, 10]  # 0.55 / 0.2 / 0.25 of 40, off by at most the two-image patient
    for k in ("val", "holdout"):  # stratified
        labels = [it["label"] for it in parts[k]]
        assert abs(labels.count(0) - labels.count(1)) <= 1
    assert _images(parts["test"]) == _images(kermany_datalist(big_kermany, "test"))
    assert dataset_splits("kermany", big_kermany, val_fraction=0.2, holdout_fraction=0.25, seed=3) == parts
    assert _images(dataset_splits("kermany", big_kermany, val_fraction=0.2, seed=4)["val"]) != _images(parts["val"])


def test_bundle_and_evaluation_use_the_same_rule(big_kermany):
    from monai_aegis.evaluation.datasets import load_evaluation_splits

    rule = dataset_splits("kermany", big_kermany, val_fraction=0.2, seed=1)
    lists = bundle_datalists("kermany", big_kermany, val_fraction=0.2, seed=1)
    assert set(rule) == set(lists) == {"train", "val", "test"}
    for k in lists:
        assert lists[k] == [{"image": str(it["image"]), "label": int(it["label"]), "id": str(it["image"])}
                            for it in rule[k]]
    tensors = load_evaluation_splits("kermany", big_kermany, spatial_size=8, val_fraction=0.2, holdout_fraction=0.0,
                                     seed=1)
    assert {k: len(v[1]) for k, v in tensors.items()} == {k: len(v) for k, v in rule.items()}
    assert [int(y) for y in tensors["val"][1]] == [it["label"] for it in rule["val"]]


def test_bundle_holdout_is_the_evaluation_holdout(big_kermany):
    """A bundle trained with ``holdout_fraction`` never sees the images the evaluation reports as ``holdout``."""
    from monai_aegis.evaluation.datasets import load_evaluation_splits

    lists = bundle_datalists("kermany", big_kermany, val_fraction=0.2, holdout_fraction=0.25, seed=3)
    assert list(lists) == ["train", "val", "holdout", "test"]
    rule = dataset_splits("kermany", big_kermany, val_fraction=0.2, holdout_fraction=0.25, seed=3)
    assert {k: [it["image"] for it in v] for k, v in lists.items()} == {k: [str(p) for p in _images(v)] for k, v in rule.items()}
    assert not {it["image"] for it in lists["holdout"]} & {it["image"] for it in lists["train"] + lists["val"]}
    tensors = load_evaluation_splits("kermany", big_kermany, spatial_size=8, val_fraction=0.2, holdout_fraction=0.25,
                                     seed=3)
    assert [int(y) for y in tensors["holdout"][1]] == [it["label"] for it in lists["holdout"]]
    without = bundle_datalists("kermany", big_kermany, val_fraction=0.2, seed=3)
    assert "holdout" not in without and len(without["train"]) > len(lists["train"])
    with pytest.raises(ValueError, match="holdout_fraction 0.2 needs dataset_dir"):
        bundle_datalists("kermany", "", holdout_fraction=0.2)


def test_folder_without_test_split_warns(big_kermany):
    import shutil

    shutil.rmtree(big_kermany / "test")
    with pytest.warns(UserWarning, match="no test/ folder"):
        parts = dataset_splits("kermany", big_kermany)
    assert parts["test"] == parts["val"]


def _fundus_csv(folder: Path, write_png, with_split: bool, patients: bool) -> Path:
    rows = ["file,diagnosis_0_4" + (",split" if with_split else "") + (",patient_id" if patients else "")]
    rng = np.random.default_rng(0)
    for i in range(30):
        rel = f"images/{i:03d}.png"
        write_png(folder / rel, rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
        cells = [rel, str(i % 5)] + (["test" if i % 5 == 0 and i >= 15 else "train"] if with_split else [])
        rows.append(",".join(cells + ([str(i // 2)] if patients else [])))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_fundus_split_column_or_grouped_test_split(tmp_path, write_png):
    a = tmp_path / "a"
    _fundus_csv(a, write_png, with_split=True, patients=True)
    parts = dataset_splits("fundus", a, val_fraction=0.2)
    assert [Path(it["image"]).name for it in parts["test"]] == ["015.png", "020.png", "025.png"]
    assert sum(len(parts[k]) for k in ("train", "val")) == 27
    b = tmp_path / "b"  # no split column, no patient ids (APTOS-like): a seeded 20 % test split, by image
    csv = _fundus_csv(b, write_png, with_split=False, patients=False)
    assert find_labels_csv(b) == csv and find_labels_csv(csv) == csv
    parts = dataset_splits("fundus", b, val_fraction=0.2, seed=0)
    assert len(parts["test"]) == 6 and sum(len(parts[k]) for k in ("train", "val")) == 24
    assert not set(_images(parts["test"])) & set(_images(parts["train"]) + _images(parts["val"]))
    assert bundle_datalists("fundus", csv, seed=0)["test"] == [
        {"image": it["image"], "label": it["label"], "id": it["image"]}
        for it in dataset_splits("fundus", b, seed=0)["test"]
    ]


def test_errors_name_the_problem(tmp_path, big_kermany):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dataset_splits("kermany", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no labels CSV"):
        dataset_splits("fundus", big_kermany / "test")
    with pytest.raises(ValueError, match="training part"):
        dataset_splits("kermany", big_kermany, val_fraction=0.5, holdout_fraction=0.5)
    with pytest.raises(ValueError):
        dataset_splits("imagenet", big_kermany)
