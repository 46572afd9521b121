import copy

import pytest
import torch

from frugalnet.nn import SparseConv2d, SparseLinear


def test_exact_nonzeros_per_unit_linear_and_conv():
    lin = SparseLinear(50, 7, sparsity=0.7, seed=1)
    assert (lin.weight_mask.sum(1) == 15).all()
    assert ((lin.weight != 0).sum(1) <= 15).all() and ((lin.weight != 0) & ~lin.weight_mask).sum() == 0
    conv = SparseConv2d(3, 5, 3, sparsity=0.5, seed=1)
    assert (conv.weight_mask.view(5, -1).sum(1) == round(0.5 * 27)).all()


def test_same_seed_same_mask():
    assert torch.equal(SparseLinear(20, 4, 0.5, seed=3).weight_mask, SparseLinear(20, 4, 0.5, seed=3).weight_mask)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3, nesterov=True),
])
def test_masked_weights_stay_exactly_zero_after_100_steps(make_opt):
    torch.manual_seed(0)
    model = torch.nn.Sequential(SparseConv2d(1, 4, 3, 0.6), torch.nn.ReLU(), torch.nn.Flatten(),
                                SparseLinear(4 * 6 * 6, 3, 0.8))
    opt = make_opt(model.parameters())
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 3, (8,))).backward()
        opt.step()
    for layer in (model[0], model[3]):
        assert (layer.weight[~layer.weight_mask] == 0).all()
        assert (layer.weight[layer.weight_mask] != 0).float().mean() > 0.99   # the kept weights did train


def test_deepcopy_still_enforces_its_mask():
    a = SparseLinear(10, 4, 0.5)
    b = copy.deepcopy(a)
    opt = torch.optim.SGD(b.parameters(), lr=0.1, weight_decay=0.5)
    b.weight.grad = torch.ones_like(b.weight)
    opt.step()
    assert (b.weight[~b.weight_mask] == 0).all()


def test_initialisation_scaled_by_sparse_fan_in():
    lin = SparseLinear(1000, 200, sparsity=0.9, seed=0)
    nonzero = lin.weight[lin.weight_mask]
    assert nonzero.abs().max() <= 1 / 100 ** 0.5 + 1e-6        # bound 1/sqrt(100 kept inputs)
    assert nonzero.abs().max() > 0.9 / 100 ** 0.5


def test_state_dict_round_trip_keeps_mask_and_zeros():
    a = SparseLinear(12, 3, 0.5, seed=0)
    b = SparseLinear(12, 3, 0.5, seed=99)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.weight_mask, b.weight_mask) and torch.equal(a.weight, b.weight)


def test_custom_mask_is_used():
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[:, 0] = True
    lin = SparseLinear(4, 3, sparsity=0.0, mask=mask)
    assert torch.equal(lin.weight != 0, mask) and abs(lin.sparsity - 0.75) < 1e-9


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.2])
def test_sparsity_outside_range_raises(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        SparseLinear(10, 2, sparsity)
    with pytest.raises(ValueError, match="sparsity"):
        SparseConv2d(2, 2, 3, sparsity)


def test_sparsity_leaving_no_weight_raises():
    with pytest.raises(ValueError, match="no nonzero weight"):
        SparseLinear(4, 2, 0.95)


def test_wrong_input_shape_raises():
    with pytest.raises(ValueError, match="in_features=10"):
        SparseLinear(10, 2, 0.5)(torch.randn(3, 9))
    with pytest.raises(ValueError, match="in_channels=3"):
        SparseConv2d(3, 2, 3, 0.5)(torch.randn(1, 2, 8, 8))


def test_mask_shape_mismatch_raises():
    with pytest.raises(ValueError, match="mask shape"):
        SparseLinear(4, 3, 0.5, mask=torch.ones(4, 3, dtype=torch.bool))


def test_reset_parameters_keeps_masked_weights_zero():
    for layer in (SparseLinear(20, 10, 0.5, seed=0), SparseConv2d(3, 4, 3, 0.5, seed=0)):
        layer.reset_parameters()
        assert int(((layer.weight != 0) & ~layer.weight_mask).sum()) == 0
        assert int((layer.weight != 0).sum()) > 0


def test_set_mask_replaces_mask_and_zeroes_outside():
    layer = SparseLinear(20, 10, 0.5, seed=0)
    new = torch.rand(10, 20, generator=torch.Generator().manual_seed(1)) > 0.8
    layer.set_mask_(new)
    assert torch.equal(layer.weight_mask, new) and layer.mask_version == 1
    assert int(((layer.weight != 0) & ~new).sum()) == 0
    assert abs(layer.sparsity - (1 - new.float().mean().item())) < 1e-6
    with pytest.raises(ValueError, match="mask shape"):
        layer.set_mask_(torch.ones(3, 3, dtype=torch.bool))
