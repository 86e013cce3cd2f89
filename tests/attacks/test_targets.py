"""Other-class targets: one rule for the Shield's training negatives and the evaluation's attacks."""

import pytest
import torch

from monai_aegis.attacks import other_class_targets, sample_other_classes


def test_sample_other_classes():
    y = torch.randint(0, 5, (1000,))
    t = sample_other_classes(y, 5, torch.Generator().manual_seed(0))
    assert (t != y).all() and set(t.tolist()) == set(range(5))
    with pytest.raises(ValueError, match="at least 2"):
        sample_other_classes(y, 1)


def test_other_class_targets():
    y = torch.tensor([0, 1, 1, 0])
    assert torch.equal(other_class_targets(y, 2), 1 - y)
    y5 = torch.randint(0, 5, (200,))
    t = other_class_targets(y5, 5, seed=3)
    assert (t != y5).all() and torch.equal(t, other_class_targets(y5, 5, seed=3))
    with pytest.raises(ValueError, match="at least 2"):
        other_class_targets(y, 1)


def test_seeded_targets_are_the_sampled_rule():
    y = torch.randint(0, 4, (50,))
    assert torch.equal(other_class_targets(y, 4, seed=7), sample_other_classes(y, 4, torch.Generator().manual_seed(7)))
