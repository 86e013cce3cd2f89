"""Fixtures for the data tests: tiny image files in the real datasets' layouts, written into ``tmp_path``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest


def _gray(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


@pytest.fixture
def write_png() -> Callable[..., Path]:
    """``write_png(path, array)``: save a uint8 (H, W) / (H, W, 3) array (or a seeded random gray image) as PNG/JPEG."""
    from PIL import Image

    def _write(path: Path, array: np.ndarray | None = None, seed: int = 0, size: tuple[int, int] = (12, 10)) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arr = _gray(*size, seed) if array is None else array
        Image.fromarray(arr).save(path)
        return path

    return _write


@pytest.fixture
def write_dicom() -> Callable[..., Path]:
    """``write_dicom(path, uint16 array, bits_stored=12)``: a minimal valid 16-bit MONOCHROME2 DICOM file."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    def _write(path: Path, array: np.ndarray, bits_stored: int = 12) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.Modality = "P0", "OT"
        ds.Rows, ds.Columns = array.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        ds.PixelData = array.astype(np.uint16).tobytes()
        ds.save_as(path, enforce_file_format=True)
        return path

    assert pydicom
    return _write


@pytest.fixture
def kermany_root(tmp_path: Path, write_png) -> Path:
    """A Kaggle-layout Kermany folder: train 3 NORMAL / 4 PNEUMONIA, test 2 / 2, mixed extension case."""
    root = tmp_path / "chest_xray"
    names = {
        ("train", "NORMAL"): ["IM-0115-0001.jpeg", "IM-0117-0001.png", "NORMAL2-IM-0095-0001.PNG"],
        ("train", "PNEUMONIA"): [
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpg",
            "person22_virus_50.png",
            "person1430_bacteria_3695.JPEG",
        ],
        ("test", "NORMAL"): ["IM-0011-0001-0001.png", "NORMAL2-IM-0173-0001-0002.png"],
        ("test", "PNEUMONIA"): ["person100_bacteria_475.png", "person1661_virus_2872.jpg"],
    }
    for i, ((split, cls), files) in enumerate(sorted(names.items())):
        for j, name in enumerate(files):
            write_png(root / split / cls / name, seed=10 * i + j)
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (root / "train" / "NORMAL" / ".DS_Store").write_text("")
    return root
