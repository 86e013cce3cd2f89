from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_aegis.data import fundus_datalist

GRADES = [0, 1, 2, 3, 4, 0]


def _rgb(seed):
    return np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)


@pytest.fixture
def aptos(tmp_path, write_png):
    ids = [f"{i:03x}abc{i}" for i in range(len(GRADES))]
    lines = ["id_code,diagnosis"] + [f"{i},{g}" for i, g in zip(ids, GRADES)]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    for k, i in enumerate(ids):
        write_png(tmp_path / "train_images" / f"{i}.png", _rgb(k))
    return tmp_path / "train.csv", ids


@pytest.fixture
def eyepacs(tmp_path, write_png):
    names = ["10_left", "10_right", "13_left", "15_right", "16_left", "16_right"]
    lines = ["image,level"] + [f"{n},{g}" for n, g in zip(names, GRADES)]
    (tmp_path / "trainLabels.csv").write_text("\n".join(lines) + "\n")
    for k, n in enumerate(names):
        write_png(tmp_path / "train" / f"{n}.jpeg", _rgb(k))
    return tmp_path / "trainLabels.csv", names


def test_aptos_binary_and_grades(aptos):
    csv_path, ids = aptos
    items = fundus_datalist(csv_path)
    assert [Path(it["image"]).name for it in items] == [f"{i}.png" for i in ids]
    assert [it["label"] for it in items] == [0, 1, 1, 1, 1, 0]
    assert [it["grade"] for it in items] == GRADES
    assert all("patient_id" not in it and "split" not in it for it in items)
    graded = fundus_datalist(csv_path, binary=False)
    assert [it["label"] for it in graded] == GRADES


def test_eyepacs_patient_and_eye(eyepacs):
    csv_path, names = eyepacs
    items = fundus_datalist(csv_path)
    assert all(it["image"].endswith(".jpeg") and Path(it["image"]).is_file() for it in items)
    assert [it["patient_id"] for it in items] == ["10", "10", "13", "15", "16", "16"]
    assert [it["eye"] for it in items] == ["left", "right", "left", "right", "left", "right"]
    assert [it["label"] for it in items] == [0, 1, 1, 1, 1, 0]


def test_converted_extension_and_explicit_columns(tmp_path, write_png):
    # EyePACS ids but the images were converted to PNG; non-standard column names given explicitly.
    (tmp_path / "labels.csv").write_text("name,dr_grade,fold,subject\na_left,3,train,7\nb_right,0,test,8\n")
    write_png(tmp_path / "imgs" / "a_left.png", _rgb(0))
    write_png(tmp_path / "imgs" / "b_right.png", _rgb(1))
    items = fundus_datalist(
        tmp_path / "labels.csv", tmp_path / "imgs", image_column="name", label_column="dr_grade",
        split_column="fold", patient_column="subject",
    )
    assert [(Path(it["image"]).name, it["label"], it["grade"], it["split"], it["patient_id"], it["eye"])
            for it in items] == [("a_left.png", 1, 3, "train", "7", "left"),
                                 ("b_right.png", 0, 0, "test", "8", "right")]
    only_test = fundus_datalist(tmp_path / "labels.csv", tmp_path / "imgs", image_column="name",
                                label_column="dr_grade", split_column="fold", split="test")
    assert [Path(it["image"]).name for it in only_test] == ["b_right.png"]


def test_shared_layout_split_column(tmp_path, write_png):
    rows = ["file,diagnosis_0_4,dr_binary,split,patient_id,eye",
            "images/1_left.png,0,0,train,1,left", "images/1_right.png,2,1,train,1,right",
            "images/2_left.png,4,1,test,2,left"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    for k, n in enumerate(["1_left", "1_right", "2_left"]):
        write_png(tmp_path / "images" / f"{n}.png", _rgb(k))
    items = fundus_datalist(tmp_path / "labels.csv")
    assert [(it["split"], it["label"], it["patient_id"], it["eye"]) for it in items] == [
        ("train", 0, "1", "left"), ("train", 1, "1", "right"), ("test", 1, "2", "left")]
    assert len(fundus_datalist(tmp_path / "labels.csv", split="train")) == 2
    assert len(fundus_datalist(tmp_path / "labels.csv", split=["train", "test"])) == 3
    with pytest.raises(ValueError, match=r"split value\(s\) \['val'\] not found"):
        fundus_datalist(tmp_path / "labels.csv", split="val")


def test_errors(tmp_path, aptos, write_png):
    csv_path, ids = aptos
    with pytest.raises(FileNotFoundError, match="CSV not found"):
        fundus_datalist(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id_code,grade_x\nabc,1\n")
    with pytest.raises(ValueError, match="match no known fundus layout"):
        fundus_datalist(bad)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['level'\]"):
        fundus_datalist(bad, tmp_path / "train_images", image_column="id_code", label_column="level")
    bad.write_text(f"id_code,diagnosis\n{ids[0]},7\n")
    with pytest.raises(ValueError, match="row 2: grade 'diagnosis'=7 is outside 0-4"):
        fundus_datalist(bad, tmp_path / "train_images")
    bad.write_text(f"id_code,diagnosis\n{ids[0]},x\n")
    with pytest.raises(ValueError, match="must be an integer grade, got 'x'"):
        fundus_datalist(bad, tmp_path / "train_images")
    bad.write_text(f"id_code,diagnosis\n{ids[0]},1\nghost,2\n")
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) listed .* not found .*: ghost"):
        fundus_datalist(bad, tmp_path / "train_images")
    with pytest.raises(FileNotFoundError, match="pass image_dir"):
        fundus_datalist(_moved(bad, tmp_path / "sub"))  # no image folder beside the CSV
    with pytest.raises(ValueError, match="has no split column"):
        fundus_datalist(csv_path, split="train")


def _moved(csv_file, folder):
    folder.mkdir()
    return csv_file.rename(folder / "labels_x.csv")


@pytest.mark.shared_data
def test_real_binary_counts(shared_data):
    csv_path = shared_data / "fundus" / "labels.csv"
    if not csv_path.is_file():
        pytest.skip("fundus data absent")
    items = fundus_datalist(csv_path)
    assert Counter((it["split"], it["label"]) for it in items) == {
        ("train", 0): 241, ("train", 1): 240, ("test", 0): 59, ("test", 1): 60}
    grades = Counter((it["split"], it["grade"]) for it in fundus_datalist(csv_path, binary=False))
    assert [grades[("train", g)] for g in range(5)] == [241, 65, 53, 61, 61]
    # both eyes of a patient stay in one split
    splits_of = {}
    for it in items:
        splits_of.setdefault(it["patient_id"], set()).add(it["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert len(fundus_datalist(csv_path, split="test")) == 119
