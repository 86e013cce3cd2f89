"""RandomStates (every generator of a run round-trips through a weights_only checkpoint) and state_fingerprint."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from monai.transforms import RandFlip

from monai_aegis.utils import RandomStates, atomic_torch_save, safe_torch_load, state_fingerprint


def _draw(gen, flip):
    return (torch.rand(3).tolist(), np.random.rand(2).tolist(), random.random(),
            torch.rand(2, generator=gen).tolist(), flip.R.rand())


def test_random_states_round_trip_through_a_safe_checkpoint(tmp_path):
    gen, flip = torch.Generator().manual_seed(1), RandFlip(prob=0.5).set_random_state(2)
    states = RandomStates({"loader": gen}, {"flip": flip})
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    atomic_torch_save(states.state_dict(), tmp_path / "rng.pt")
    expected = _draw(gen, flip)
    _draw(gen, flip)  # move every generator on
    states.load_state_dict(safe_torch_load(tmp_path / "rng.pt"))  # weights_only=True loads it
    assert _draw(gen, flip) == expected


def test_random_states_errors():
    with pytest.raises(TypeError, match="not a torch.Generator"):
        RandomStates({"g": 3})
    with pytest.raises(TypeError, match="no NumPy RandomState"):
        RandomStates(randomizables={"r": object()})
    saved = RandomStates().state_dict()
    with pytest.raises(KeyError, match="no entry for \\['loader'\\]"):
        RandomStates({"loader": torch.Generator()}).load_state_dict(saved)


def test_state_fingerprint():
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    fa = state_fingerprint(a)
    assert fa == state_fingerprint(a.state_dict()) and len(fa) == 64
    assert fa != state_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert state_fingerprint(b) == fa
    with torch.no_grad():
        b.bias[0] += 1e-7  # any change of a value shows
    assert state_fingerprint(b) != fa
    assert state_fingerprint({"w": torch.zeros(2)}) != state_fingerprint({"w": torch.zeros(2, 1)})
