import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset

from monai_aegis.data import check_datalist, medmnist_datalist
from monai_aegis.transforms import classification_transforms


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 3), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 5, 7), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    path = tmp_path / "tinymnist.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_items_shapes_orientation(npz):
    path, arrays = npz
    items = medmnist_datalist(path, "val")
    assert len(items) == 3 and [it["label"] for it in items] == [0, 1, 0]
    assert all(isinstance(it["label"], int) for it in items)
    img = items[1]["image"]
    assert img.shape == (1, 7, 5) and img.dtype == np.uint8  # (1, W, H): LoadImage's axis order
    np.testing.assert_array_equal(img[0], arrays["val_images"][1].T)
    assert not img.flags.writeable
    stored = medmnist_datalist(path, "val", monai_orientation=False)
    np.testing.assert_array_equal(stored[1]["image"][0], arrays["val_images"][1])
    check_datalist(items, num_classes=2)


def test_orientation_matches_loadimage_of_same_png(npz, tmp_path, write_png):
    path, arrays = npz
    png = write_png(tmp_path / "x.png", arrays["train_images"][2])
    tf = classification_transforms(spatial_size=(7, 5))
    from_file = tf({"image": str(png)})["image"]
    item = medmnist_datalist(path, "train")[2]
    from_array = classification_transforms(spatial_size=(7, 5), load=False)(item)["image"]
    torch.testing.assert_close(from_file, from_array)


def test_pipeline_without_loadimage(npz):
    path, _ = npz
    ds = Dataset(medmnist_datalist(path, "train"), classification_transforms(spatial_size=16, load=False))
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert batch["image"].shape == (6, 1, 16, 16) and batch["image"].dtype == torch.float32
    assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
    assert batch["label"].tolist() == [0, 1, 0, 1, 0, 1]


def test_rgb_and_multilabel(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, test_images=np.zeros((2, 4, 4, 3), np.uint8), test_labels=np.array([[1, 0, 1], [0, 0, 0]], np.uint8))
    items = medmnist_datalist(path, "test")
    assert items[0]["image"].shape == (3, 4, 4)
    np.testing.assert_array_equal(items[0]["label"], [1, 0, 1])
    check_datalist(items, num_classes=2)


def test_errors(npz, tmp_path):
    path, _ = npz
    with pytest.raises(FileNotFoundError, match="MedMNIST file not found"):
        medmnist_datalist(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="unknown MedMNIST split 'valid'"):
        medmnist_datalist(path, "valid")
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"has no \['train_labels'\]; it has \['train_images'\]"):
        medmnist_datalist(partial)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        medmnist_datalist(mismatch)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read MedMNIST file"):
        medmnist_datalist(corrupt)


@pytest.mark.shared_data
def test_real_pneumoniamnist(shared_data):
    path = shared_data / "medmnist" / "pneumoniamnist.npz"
    for split, n in (("train", 2428), ("val", 270), ("test", 468)):
        items = medmnist_datalist(path, split)
        assert len(items) == n
        assert sum(it["label"] for it in items) == n // 2  # balanced subsample
        assert items[0]["image"].shape == (1, 28, 28) and items[0]["image"].dtype == np.uint8
