"""A tiny defended classifier on the embedded chest X-ray sample, shared by the evaluation tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toys import fit

from monai_aegis.data import load_sample_arrays
from monai_aegis.evaluation.classifiers import SMALL_VGG_LAYERS, small_vgg
from monai_aegis.networks import AegisWrapper, Shield, cushion_from_name

SIZE = 32


@pytest.fixture(scope="session")
def sample32():
    return {s: load_sample_arrays(s, SIZE) for s in ("train", "val", "test")}


def _train(width: int, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return fit(small_vgg(1, 2, width=width), x, y, epochs=epochs, lr=3e-3)


@pytest.fixture(scope="session")
def tiny_classifier(sample32):
    clf = _train(8, *sample32["train"], epochs=15, seed=0)
    xt, yt = sample32["test"]
    with torch.no_grad():
        assert (clf(xt).argmax(1) == yt).float().mean() > 0.8
    return clf


@pytest.fixture(scope="session")
def tiny_substitute(sample32):
    return _train(4, *sample32["train"], epochs=3, seed=1)


def make_tiny_wrapper(classifier: nn.Module, sample: dict) -> AegisWrapper:
    """An untrained Shield (input statistics fitted) behind the JPEG-80 Cushion, calibrated on the validation split."""
    torch.manual_seed(0)
    cushion = cushion_from_name("jpeg80")
    shield = Shield.from_classifier(classifier, SMALL_VGG_LAYERS, (1, SIZE, SIZE), 2, preprocess=cushion,
                                    width=4, hidden=8)
    wrapper = AegisWrapper(classifier, shield, cushion=cushion)
    wrapper.shield.fit_input_stats(wrapper.forward_features(sample["train"][0][:64])[1])
    wrapper.calibrate(sample["val"][0])
    return wrapper


@pytest.fixture()
def tiny_wrapper(tiny_classifier, sample32):
    return make_tiny_wrapper(tiny_classifier, sample32)
