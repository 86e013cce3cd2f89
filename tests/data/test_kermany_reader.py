import csv
from collections import Counter

import pytest

from monai_aegis.data import check_datalist, kermany_datalist, parse_kermany_patient_id


@pytest.mark.parametrize(
    "name, pid",
    [
        ("person123_bacteria_456", "person123"),
        ("person123_virus_7.jpeg", "person123"),
        ("IM-0001-0001", "IM-0001"),
        ("IM-0011-0001-0002.png", "IM-0011"),
        ("NORMAL2-IM-0095-0001", "NORMAL2-IM-0095"),
        ("/a/b/NORMAL2-IM-0173-0001-0001.png", "NORMAL2-IM-0173"),
        ("scan_42.png", "scan_42"),  # unknown pattern: its own patient
        ("person12", "person12"),
    ],
)
def test_parse_patient_id(name, pid):
    assert parse_kermany_patient_id(name) == pid


def test_reads_layout(kermany_root):
    items = kermany_datalist(kermany_root)
    assert list(dict.fromkeys((it["split"], it["class_name"]) for it in items)) == [
        ("train", "NORMAL"),
        ("train", "PNEUMONIA"),
        ("test", "NORMAL"),
        ("test", "PNEUMONIA"),
    ]  # order: train before test, NORMAL before PNEUMONIA
    counts = Counter((it["split"], it["label"]) for it in items)
    assert counts == {("train", 0): 3, ("train", 1): 4, ("test", 0): 2, ("test", 1): 2}
    by_name = {it["image"].rsplit("/", 1)[1]: it for it in items}
    assert "notes.txt" not in by_name and ".DS_Store" not in by_name
    assert by_name["NORMAL2-IM-0095-0001.PNG"]["patient_id"] == "NORMAL2-IM-0095"
    assert by_name["person1_bacteria_2.jpg"]["patient_id"] == "person1"
    assert by_name["person1_bacteria_2.jpg"]["subtype"] == "bacteria"
    assert by_name["person22_virus_50.png"]["subtype"] == "virus"
    assert by_name["IM-0117-0001.png"]["subtype"] == "normal"
    assert all(it["image"].startswith(str(kermany_root.resolve())) for it in items)
    check_datalist(items, num_classes=2, try_load=True)


def test_split_selection_and_single_split_root(kermany_root):
    test_only = kermany_datalist(kermany_root, "test")
    assert len(test_only) == 4 and {it["split"] for it in test_only} == {"test"}
    direct = kermany_datalist(kermany_root / "train")  # root = one split folder
    assert len(direct) == 7 and all("split" not in it for it in direct)
    with pytest.raises(FileNotFoundError, match="split folder 'val'"):
        kermany_datalist(kermany_root, ["train", "val"])
    with pytest.raises(ValueError, match="unknown Kermany split"):
        kermany_datalist(kermany_root, "validation")


def test_case_insensitive_folders(tmp_path, write_png):
    write_png(tmp_path / "Train" / "normal" / "IM-0001-0001.png")
    write_png(tmp_path / "Train" / "Pneumonia" / "person1_virus_1.png")
    items = kermany_datalist(tmp_path)
    assert [(it["split"], it["label"]) for it in items] == [("train", 0), ("train", 1)]


def test_errors(tmp_path, kermany_root, write_png):
    with pytest.raises(FileNotFoundError, match="not found"):
        kermany_datalist(tmp_path / "nope")
    with pytest.raises(ValueError, match="neither split folders"):
        kermany_datalist(tmp_path / "chest_xray" / "train" / "NORMAL")
    for f in (kermany_root / "test" / "PNEUMONIA").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"PNEUMONIA' holds no images"):
        kermany_datalist(kermany_root)
    (kermany_root / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(FileNotFoundError, match="class folder 'PNEUMONIA' is missing"):
        kermany_datalist(kermany_root, "test")


@pytest.mark.shared_data
def test_real_counts_and_patient_ids(shared_data):
    root = shared_data / "chest_xray"
    items = kermany_datalist(root)
    counts = Counter((it["split"], it["label"]) for it in items)
    assert counts == {("train", 0): 403, ("train", 1): 1163, ("test", 0): 234, ("test", 1): 390}
    subtypes = Counter(it["subtype"] for it in items if it["split"] == "train")
    assert subtypes == {"normal": 403, "bacteria": 769, "virus": 394}
    with open(root / "manifest.csv", newline="") as f:
        manifest = {row["file"]: row for row in csv.DictReader(f)}
    assert len(manifest) == len(items)
    base = str(root.resolve()) + "/"
    for it in items:
        row = manifest[it["image"][len(base):]]
        assert it["patient_id"] == row["patient_id"], it["image"]
        assert it["label"] == int(row["label_idx"]) and it["split"] == row["split"] and it["subtype"] == row["subtype"]
    assert len({it["patient_id"] for it in items if it["split"] == "train"}) == 1202
    assert len({it["patient_id"] for it in items if it["split"] == "test"}) == 427
