"""Tests for the Cushion / Cushiond MONAI transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd

from monai_aegis.networks.layers import CushionLayer, jpeg_compress, reduce_bit_depth
from monai_aegis.transforms import Cushion, CushionD, Cushiond, CushionDict


def test_aliases_and_backend():
    assert CushionD is Cushiond and CushionDict is Cushiond
    assert Cushiond.backend == Cushion.backend


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 16, 20), (2, 3, 16, 16)])
def test_array_matches_layer(shape):
    img = torch.rand(shape)
    out = Cushion("jpeg80")(img)
    assert torch.equal(out, jpeg_compress(img[None], 80)[0])


def test_type_round_trip():
    cushion = Cushion("bit_depth", bits=4)
    arr = np.random.rand(1, 8, 8).astype(np.float32)
    out_np = cushion(arr)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    np.testing.assert_array_equal(out_np, reduce_bit_depth(torch.from_numpy(arr)[None], 4)[0].numpy())

    out_t = cushion(torch.from_numpy(arr).double())
    assert type(out_t) is torch.Tensor and out_t.dtype == torch.float64

    affine = torch.diag(torch.tensor([0.5, 0.7, 1.0, 1.0], dtype=torch.float64))
    meta = MetaTensor(torch.from_numpy(arr), affine=affine, meta={"filename_or_obj": "scan.png"})
    out_m = cushion(meta)
    assert isinstance(out_m, MetaTensor)
    assert out_m.meta["filename_or_obj"] == "scan.png"
    assert torch.equal(out_m.affine, affine)
    np.testing.assert_array_equal(out_m.numpy(), out_np)


def test_accepts_layer_and_callable():
    layer = CushionLayer("tvm", tv_max_iter=5)
    assert Cushion(layer).layer is layer
    assert Cushion(lambda t: 1 - t)(torch.zeros(1, 4, 4)).eq(1).all()
    with pytest.raises(ValueError, match="cannot be applied"):
        Cushion(layer, quality=70)
    with pytest.raises(ValueError):
        Cushion("jpg80")


def test_errors():
    cushion = Cushion()
    with pytest.raises(ValueError, match="Scale intensities"):
        cushion(np.random.rand(1, 8, 8) * 255)  # raw LoadImage output
    with pytest.raises(ValueError, match="channel-first"):
        cushion(np.random.rand(8, 8))
    with pytest.raises(ValueError, match="NaN"):
        cushion(np.full((1, 8, 8), np.nan))
    with pytest.raises(ValueError, match="dtype"):
        cushion(np.zeros((1, 8, 8), dtype=np.uint8))


def test_missing_keys():
    data = {"image": torch.rand(1, 8, 8), "label": 1}
    out = Cushiond(keys=["image", "other"], allow_missing_keys=True)(data)
    assert out["label"] == 1 and not torch.equal(out["image"], data["image"])
    with pytest.raises(KeyError):
        Cushiond(keys=["other"])(data)


def _write_png(path, rng):
    from PIL import Image

    yy, xx = np.mgrid[0:32, 0:40]
    rgb = np.stack([xx * 6, yy * 7, (xx + yy) * 3], axis=-1) + rng.integers(0, 20, (32, 40, 3))
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)


def _write_nifti(path, rng):
    import nibabel as nib

    vol = (rng.random((16, 18, 4)) * 1000 - 500).astype(np.float32)  # HU-like, negative values included
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.0, 1.0])), str(path))


@pytest.mark.parametrize(
    "suffix, writer, spatial_ndim, channels",
    [(".png", _write_png, 2, 3), (".dcm", "dicom", 3, 1), (".nii.gz", _write_nifti, 3, 1)],  # DICOM: (1, H, W, 1)
)
def test_cushiond_in_compose_after_loadimage(tmp_path, write_dicom, suffix, writer, spatial_ndim, channels):
    pytest.importorskip("PIL")
    pytest.importorskip("pydicom")
    pytest.importorskip("nibabel")
    path = tmp_path / f"image{suffix}"
    rng = np.random.default_rng(0)
    if writer == "dicom":
        write_dicom(path, (rng.random((24, 28)) * 4000).astype(np.uint16), pixel_spacing=(0.5, 0.5))
    else:
        writer(path, rng)
    load = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])

    # LoadImage gives raw intensities: the cushion refuses them and says what to do (Compose wraps the error)
    with pytest.raises(RuntimeError) as err:
        Compose([load, Cushiond("image")])({"image": str(path)})
    assert isinstance(err.value.__cause__, ValueError) and "Scale intensities" in str(err.value.__cause__)

    pipeline = Compose([load, ScaleIntensityd("image", minv=0.0, maxv=1.0), Cushiond("image", "jpeg80")])
    out = pipeline({"image": str(path), "label": 0})["image"]
    scaled = Compose([load, ScaleIntensityd("image", minv=0.0, maxv=1.0)])({"image": str(path)})["image"]
    assert isinstance(out, MetaTensor)
    assert out.shape == scaled.shape and out.shape[0] == channels and out.ndim == 1 + spatial_ndim
    assert str(out.meta["filename_or_obj"]).endswith(suffix)
    assert torch.equal(out.affine, scaled.affine)
    assert torch.equal(out.as_tensor(), jpeg_compress(scaled.as_tensor()[None].float(), 80)[0].to(out.dtype))
    assert 0 < float((out - scaled).abs().max()) < 0.25
