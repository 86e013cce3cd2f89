from pathlib import Path

import numpy as np
import pytest
import torch

from monai_aegis.data import check_datalist, image_datalist, list_image_files
from monai_aegis.transforms import classification_transforms

nib = pytest.importorskip("nibabel")


@pytest.fixture
def mixed_folder(tmp_path, write_png, write_dicom):
    root = tmp_path / "scans"
    write_png(root / "a" / "x1.png", seed=1)
    write_png(root / "a" / "x2.JPG", np.random.default_rng(2).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    write_png(root / "b" / "deep" / "x3.jpeg", seed=3)
    write_dicom(root / "b" / "x4.dcm", (np.arange(120).reshape(12, 10) * 30).astype(np.uint16))
    nib.save(nib.Nifti1Image(np.random.default_rng(5).random((12, 10)).astype(np.float32) * 500, np.eye(4)),
             str(root / "b" / "x5.nii"))
    vol = np.arange(120, dtype=np.int16).reshape(12, 10, 1)  # 2-D slice stored as a 3-D NIfTI
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "a" / "x6.nii.gz"))
    (root / "a" / "readme.txt").write_text("skip me")
    (root / "b" / "x7.nii.gz.bak").write_text("skip me")
    return root


def test_folder_recursive_and_loadable(mixed_folder):
    items = image_datalist(mixed_folder)
    names = [Path(it["image"]).name for it in items]
    assert names == ["x1.png", "x2.JPG", "x6.nii.gz", "x3.jpeg", "x4.dcm", "x5.nii"]  # sorted by path
    assert all("label" not in it for it in items)
    assert len(image_datalist(mixed_folder / "b", recursive=False)) == 2
    check_datalist(items, label_key=None, try_load=True)
    tf = classification_transforms(spatial_size=8)
    for it in items:
        x = tf(it)["image"]
        assert x.shape == (1, 8, 8) and x.dtype == torch.float32, it["image"]
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0, it["image"]
        assert float(x.max()) > 0.5, it["image"]  # scaled to the unit range, not left at 1/255 or 1/4095


def test_labels_variants(mixed_folder):
    files = [mixed_folder / "a" / "x1.png", mixed_folder / "b" / "x4.dcm"]
    assert [it["label"] for it in image_datalist(files, [1, 0])] == [1, 0]
    assert [it["label"] for it in image_datalist(files, {"x1.png": 2, str(files[1]): 3})] == [2, 3]
    assert [it["label"] for it in image_datalist(files, lambda p: int(p.endswith(".dcm")))] == [0, 1]
    sub = image_datalist(mixed_folder, labels="subfolder")
    assert {(Path(it["image"]).name, it["class_name"], it["label"]) for it in sub} >= {
        ("x1.png", "a", 0), ("x3.jpeg", "deep", 2), ("x4.dcm", "b", 1)}
    assert [it["label"] for it in image_datalist(files, np.array([1.0, 0.0]))] == [1, 0]


def test_extensionless_dicom(tmp_path, write_dicom):
    f = write_dicom(tmp_path / "IMG0001", np.ones((4, 4), np.uint16))
    assert image_datalist([f])[0]["image"] == str(f.resolve())


def test_errors(tmp_path, mixed_folder):
    with pytest.raises(FileNotFoundError, match="not found: '.*ghost.png'"):
        image_datalist([mixed_folder / "a" / "x1.png", tmp_path / "ghost.png"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files .* found under"):
        image_datalist(tmp_path / "empty")
    with pytest.raises(ValueError, match="unsupported image file type: .*readme.txt"):
        image_datalist([mixed_folder / "a" / "readme.txt"])
    with pytest.raises(ValueError, match="got 1 labels for 2 image files"):
        image_datalist([mixed_folder / "a" / "x1.png", mixed_folder / "b" / "x4.dcm"], [0])
    with pytest.raises(ValueError, match="no label for '.*x4.dcm'"):
        image_datalist([mixed_folder / "a" / "x1.png", mixed_folder / "b" / "x4.dcm"], {"x1.png": 0})
    with pytest.raises(ValueError, match="must be an integer class index, got 0.5"):
        image_datalist([mixed_folder / "a" / "x1.png"], [0.5])
    with pytest.raises(ValueError, match="empty list"):
        image_datalist([])
    with pytest.raises(FileNotFoundError):
        list_image_files(tmp_path / "nowhere")


def test_expand_image_paths_strict_and_lenient(tmp_path, write_png):
    from monai_aegis.data import expand_image_paths

    write_png(tmp_path / "imgs" / "a.png")
    (tmp_path / "empty").mkdir()
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ValueError, match="unsupported image file type"):
        expand_image_paths([tmp_path / "imgs", notes])
    with pytest.raises(ValueError, match="no image files"):
        expand_image_paths([tmp_path / "empty"])
    lenient = expand_image_paths([tmp_path / "imgs", tmp_path / "empty", notes], strict=False)
    assert lenient == [str((tmp_path / "imgs" / "a.png").resolve()), str(notes.resolve())]
    with pytest.raises(FileNotFoundError, match="file or folder to screen not found"):
        expand_image_paths([tmp_path / "ghost"], strict=False, what="file or folder to screen")
