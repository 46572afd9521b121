import pytest
import torch

from frugalnet.nn.masks import complementary, fixed_fan_in


def test_fixed_fan_in_exact_and_seeded():
    m = fixed_fan_in((6, 3, 3, 3), 0.7, torch.Generator().manual_seed(0))
    assert m.shape == (6, 3, 3, 3) and (m.view(6, -1).sum(1) == 8).all()
    assert torch.equal(m, fixed_fan_in((6, 3, 3, 3), 0.7, torch.Generator().manual_seed(0)))


def test_complementary_masks_partition_the_weight():
    masks = complementary((5, 12), 4, torch.Generator().manual_seed(1))
    assert masks.shape == (4, 5, 12)
    assert (masks.sum(0) == 1).all()                       # disjoint and covering
    assert (masks.sum(2) == 3).all()                       # each keeps 1/4 of every unit's fan-in


def test_complementary_needs_divisible_fan_in():
    with pytest.raises(ValueError, match="divisible"):
        complementary((2, 10), 3)
