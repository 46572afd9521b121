import numpy as np
import pytest
import torch
from torch import nn

import frugalnet.engine as E
from frugalnet.sparsity.complementary_groups import (ComplementaryGroup, check_complementary,
                                                     complementary_conv2ds, complementary_linears, pack_group)

torch.set_num_threads(2)


def test_complementary_linears_partition_and_stay_disjoint_in_training():
    layers = complementary_linears(12, 5, 3, seed=1)
    masks = torch.stack([l.weight_mask for l in layers])
    assert (masks.sum(0) == 1).all()  # disjoint and covering
    group = ComplementaryGroup(layers)
    opt = torch.optim.SGD(group.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        group(torch.randn(4, 12)).pow(2).sum().backward()
        opt.step()
    for l in layers:
        assert (l.weight[~l.weight_mask] == 0).all()
    dense, owner, biases = pack_group(layers)
    for i, l in enumerate(layers):
        np.testing.assert_array_equal(np.where(owner == i, dense, 0), l.weight.detach().numpy())
    assert biases.shape == (3, 5)


def test_overlapping_layers_are_rejected():
    a, b = complementary_linears(8, 2, 2, seed=0)
    with pytest.raises(ValueError, match="overlap"):
        check_complementary([a, a])
    with pytest.raises(ValueError, match="divisible"):
        complementary_linears(7, 2, 2)


@pytest.mark.parametrize("conv", [False, True])
def test_engine_runs_complementary_group_with_packed_kernel(conv):
    torch.manual_seed(0)
    if conv:
        group = ComplementaryGroup(complementary_conv2ds(4, 6, 3, 4, padding=1, seed=2))
        x = torch.relu(torch.randn(3, 4, 6, 6) - 1.0)  # mostly zeros: a sparse input
    else:
        group = ComplementaryGroup(complementary_linears(40, 7, 4, seed=2))
        x = torch.relu(torch.randn(3, 40) - 1.0)
    model = nn.Sequential(group, nn.Flatten())
    engine = E.compile(model, x, repeats=1)
    choice = engine.choices[3][0]
    assert choice.rejected == []
    assert "packed:p" in choice.seconds  # the packed kernel was a checked candidate
    out = engine(x)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
