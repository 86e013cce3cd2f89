import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_aegis.transforms import (
    ConvertChannels,
    ConvertChannelsd,
    ScaleIntensityByDtype,
    ScaleIntensityByDtyped,
    classification_transforms,
)


def test_scale_uint8_fixed_range():
    x = np.array([[[0, 51, 255]]], dtype=np.uint8)
    out = ScaleIntensityByDtype()(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32  # numpy in, numpy out
    np.testing.assert_allclose(out, [[[0.0, 0.2, 1.0]]], atol=1e-7)
    # a dark 8-bit image is NOT stretched: absolute intensities are kept
    dark = torch.tensor([[[10, 20]]], dtype=torch.uint8)
    torch.testing.assert_close(ScaleIntensityByDtype()(dark), torch.tensor([[[10 / 255, 20 / 255]]]))


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.float32, torch.float64])
def test_scale_actual_range(dtype):
    x = torch.tensor([[[100, 1100, 4100]]], dtype=dtype)
    out = ScaleIntensityByDtype()(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.25, 1.0]]]))


def test_scale_float_in_unit_range_kept_and_special_cases():
    x = torch.tensor([[[0.1, 0.3, 0.6]]])
    torch.testing.assert_close(ScaleIntensityByDtype()(x), x)
    torch.testing.assert_close(ScaleIntensityByDtype()(torch.tensor([[[True, False]]])), torch.tensor([[[1.0, 0.0]]]))
    torch.testing.assert_close(ScaleIntensityByDtype()(torch.full((1, 2, 2), 700, dtype=torch.int16)),
                               torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="NaN or Inf"):
        ScaleIntensityByDtype()(torch.tensor([[[0.0, float("nan")]]]))


def test_scale_keeps_metatensor_meta_and_dict_version():
    x = MetaTensor(torch.tensor([[[0, 255]]], dtype=torch.uint8), meta={"filename_or_obj": "a.png"})
    out = ScaleIntensityByDtyped("image")({"image": x, "label": 1})
    assert isinstance(out["image"], MetaTensor) and out["image"].meta["filename_or_obj"] == "a.png"
    assert out["label"] == 1 and float(out["image"].max()) == 1.0


def test_convert_channels_rgb_to_gray_matches_pillow():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    ref = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.float32)
    out = ConvertChannels(1)(torch.from_numpy(np.moveaxis(rgb, -1, 0)).float())
    assert out.shape == (1, 6, 5)
    assert float((out[0] - torch.from_numpy(ref)).abs().max()) <= 0.5 + 1e-4  # Pillow rounds to integers
    rgba = torch.cat([torch.from_numpy(np.moveaxis(rgb, -1, 0)).float(), torch.zeros(1, 6, 5)])
    torch.testing.assert_close(ConvertChannels(1)(rgba), out)
    torch.testing.assert_close(ConvertChannels(3)(rgba), rgba[:3])


def test_convert_channels_gray_to_rgb_squeeze_and_errors():
    g = torch.rand(1, 4, 3, 1)  # 2-D DICOM/NIfTI as read by ITK: trailing singleton spatial axis
    out = ConvertChannels(3)(g)
    assert out.shape == (3, 4, 3) and torch.equal(out[2], g[0, ..., 0])
    la = torch.rand(2, 4, 3)
    torch.testing.assert_close(ConvertChannelsd("image", 1)({"image": la})["image"], la[:1])
    with pytest.raises(ValueError, match="expected a 2-D image"):
        ConvertChannels(1)(torch.rand(1, 4, 3, 2))
    with pytest.raises(ValueError, match="cannot convert an image with 5 channels"):
        ConvertChannels(1)(torch.rand(5, 4, 3))
    with pytest.raises(ValueError, match="channels must be 1"):
        ConvertChannels(2)


def test_pipeline_rgb_jpeg_and_sizes(tmp_path, write_png):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    f = write_png(tmp_path / "c.jpg", rgb)
    gray = classification_transforms(spatial_size=16)({"image": str(f)})["image"]
    assert type(gray) is torch.Tensor and gray.shape == (1, 16, 16) and gray.dtype == torch.float32
    color = classification_transforms(spatial_size=(12, 20), channels=3)({"image": str(f)})["image"]
    assert color.shape == (3, 12, 20) and not torch.equal(color[0], color[1])
    meta = classification_transforms(spatial_size=8, track_meta=True)({"image": str(f)})["image"]
    assert isinstance(meta, MetaTensor) and str(meta.meta["filename_or_obj"]).endswith("c.jpg")
    for t in (gray, color, meta):
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0


def test_pipeline_bicubic_is_clipped(tmp_path, write_png):
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    f = write_png(tmp_path / "k.png", checker)
    out = classification_transforms(spatial_size=37, mode="bicubic")({"image": str(f)})["image"]
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_pipeline_16bit_dicom_actual_range(tmp_path, write_dicom):
    arr = np.linspace(300, 3300, 12 * 10).reshape(12, 10).astype(np.uint16)  # 12-bit data, range 300..3300
    f = write_dicom(tmp_path / "d.dcm", arr)
    out = classification_transforms(spatial_size=(10, 12), mode="nearest")({"image": str(f)})["image"]
    expected = torch.from_numpy((arr.T.astype(np.float32) - 300) / 3000)  # LoadImage order (W, H)
    torch.testing.assert_close(out[0], expected, atol=1e-6, rtol=0)


def test_pipeline_bad_arguments():
    with pytest.raises(ValueError, match="spatial_size"):
        classification_transforms(spatial_size=0)
    with pytest.raises(ValueError, match="spatial_size"):
        classification_transforms(spatial_size=(8, 8, 8))
    with pytest.raises(ValueError, match="channels must be 1"):
        classification_transforms(channels=4)


def test_old_data_names_still_resolve_with_a_warning():
    import monai_aegis.data as data
    from monai_aegis.transforms import classification_transforms

    with pytest.warns(FutureWarning, match="moved to monai_aegis.transforms.classification_transforms"):
        assert data.classification_transforms is classification_transforms
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018


def test_classification_augmentation_is_the_bundles_and_is_seeded():
    import json
    from pathlib import Path

    from monai.transforms import RandAffined, RandFlipd

    from monai_aegis.transforms import classification_augmentation

    listed = json.loads((Path(__file__).parents[2] / "bundles" / "aegis_cxr" / "train.json").read_text())
    listed = listed["classifier_train"]["preprocessing"]["transforms"]  # applied to the cached preprocessed images
    assert [t["_target_"] for t in listed] == ["RandFlipd", "RandAffined"]
    aug = classification_augmentation()
    flip, shift = aug.transforms
    assert isinstance(flip, RandFlipd) and flip.prob == listed[0]["prob"]
    assert flip.flipper.spatial_axis == listed[0]["spatial_axis"]
    assert isinstance(shift, RandAffined) and shift.prob == listed[1]["prob"]
    assert tuple(shift.rand_affine.rand_affine_grid.translate_range) == tuple(listed[1]["translate_range"])
    assert shift.rand_affine.padding_mode == listed[1]["padding_mode"]
    x = {"image": torch.rand(1, 16, 16)}
    a = [classification_augmentation(seed=3)(dict(x))["image"] for _ in range(2)]
    assert torch.equal(a[0], a[1])
    outs = [classification_augmentation(seed=s)(dict(x))["image"] for s in range(8)]
    assert any(not torch.equal(o, x["image"]) for o in outs)  # it does augment
    assert all(o.shape == x["image"].shape and 0 <= float(o.min()) and float(o.max()) <= 1 for o in outs)
    assert len(classification_augmentation(shift=0).transforms) == 1
