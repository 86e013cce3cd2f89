"""RandOutlier: every kind of synthetic out-of-distribution image, batched and seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_aegis.data import load_sample_arrays
from monai_aegis.transforms import OUTLIER_KINDS, RandOutlier, RandOutlierd


@pytest.fixture(scope="module")
def xrays():
    return load_sample_arrays("test", 32)[0][:8]


@pytest.mark.parametrize("kind", OUTLIER_KINDS)
def test_each_kind(kind, xrays):
    out = RandOutlier(kinds=[kind], patch=8).set_random_state(0)(xrays)
    assert out.shape == xrays.shape and out.dtype == xrays.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, xrays)
    if kind == "inverted":
        assert torch.allclose(out, 1 - xrays)
    elif kind in ("pixel_shuffle", "patch_shuffle"):  # same intensities, other places
        assert torch.allclose(out.flatten(1).sort(1).values, xrays.flatten(1).sort(1).values)
    elif kind == "constant":
        assert float(out.flatten(1).std(1).max()) < 0.02
    elif kind == "uniform":
        assert abs(float(out.mean()) - 0.5) < 0.02


def test_seeded_mixed_single_and_dict(xrays):
    a = RandOutlier().set_random_state(3)(xrays)
    b = RandOutlier().set_random_state(3)(xrays)
    assert torch.equal(a, b)
    t = RandOutlier().set_random_state(1)
    t(xrays)
    assert len(set(np.asarray(t._kind).tolist())) > 1  # a batch mixes kinds
    single = RandOutlier(kinds=["inverted"])(xrays[0].numpy())
    assert isinstance(single, np.ndarray) and np.allclose(single, 1 - xrays[0].numpy())
    d = RandOutlierd(keys=["image", "other"], kinds=["uniform"]).set_random_state(0)
    out = d({"image": xrays[0], "other": xrays[0], "label": 1})
    assert torch.equal(out["image"], out["other"]) and out["label"] == 1


def test_errors(xrays):
    with pytest.raises(ValueError, match="noise"):
        RandOutlier(kinds=["noise"])
    with pytest.raises(ValueError, match="patch"):
        RandOutlier(patch=1)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        RandOutlier()(xrays[0, 0])
    with pytest.raises(ValueError):
        RandOutlier()(xrays * 3)
    with pytest.raises(ValueError, match="randomize=False"):
        RandOutlier()(xrays, randomize=False)
