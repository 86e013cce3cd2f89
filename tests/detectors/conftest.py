"""Synthetic hooked features for the detector tests.

Clean features are class-conditional Gaussians: two classes whose means differ by 8 along the first channel,
unit noise elsewhere. Each sample yields a "shallow" feature map ``(N, 8, 4, 4)`` and a "deep" vector ``(N, 8)``,
like a network's hooked layers. Perturbed variants:

- ``"between"``: the first channel is moved between the two class means -- off the clean manifold, the case
  every detector should solve;
- ``"flip"``: a sample drawn from the *other* class's Gaussian but predicted as this class -- on the manifold of
  the data, off the manifold of its predicted class (solvable by class-conditional scores with predictions);
- ``"clean"``: a fresh clean draw (indistinguishable from clean: every detector should be near chance).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch


def make_features(n: int, kind: str = "clean", seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    means = torch.zeros(2, 8, dtype=torch.float64)
    means[0, 0], means[1, 0] = 4.0, -4.0
    source = 1 - y if kind == "flip" else y
    x = means[source] + torch.randn(n, 8, generator=g, dtype=torch.float64)
    if kind == "between":
        x[:, 0] = 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    elif kind not in ("clean", "flip"):
        raise ValueError(kind)
    maps = x[:, :, None, None] + 0.3 * torch.randn(n, 8, 4, 4, generator=g, dtype=torch.float64)
    feats = OrderedDict(block=maps.to(dtype), head=(2.0 * x + 1.0).to(dtype))
    return feats, y  # y: the (true or, for "flip", predicted) class of each sample


@pytest.fixture
def synthetic():
    return make_features


@pytest.fixture(autouse=True)
def _single_thread():
    """The detector tests use tiny tensors: one intra-op thread avoids OpenMP synchronisation costs that, on a
    shared 2-core machine, make each tiny op take milliseconds (a 100x slowdown of the DNN training tests)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
