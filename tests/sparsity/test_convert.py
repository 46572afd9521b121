import pytest
import torch
from torch import nn

from frugalnet import sparsify_
from frugalnet.nn import KWinners, KWinners2d, SparseConv2d, SparseLinear


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 3 * 3, 16), nn.ReLU(), nn.Linear(16, 4))


def test_sparsify_converts_layers_and_relus_in_place():
    model = small_cnn()
    dense_w = model[5].weight.detach().clone()
    out = sparsify_(model, weight_sparsity=0.5, activation_sparsity=0.75, exclude=["7"])
    assert out is model
    assert isinstance(model[0], SparseConv2d) and isinstance(model[5], SparseLinear)
    assert type(model[7]) is nn.Linear                        # excluded
    assert isinstance(model[3], KWinners2d) and model[3].channels == 8 and model[3].percent_on == 0.25
    assert isinstance(model[6], KWinners) and model[6].n == 16
    # kept weights are the dense ones, the rest are zero
    kept = model[5].weight_mask
    assert torch.equal(model[5].weight[kept], dense_w[kept]) and (model[5].weight[~kept] == 0).all()
    assert (model[5].weight_mask.sum(1) == 36).all()
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


def test_sparsify_per_layer_mapping_and_keep_relus():
    model = small_cnn()
    sparsify_(model, weight_sparsity={"5": 0.9}, activation_sparsity=None)
    assert type(model[0]) is nn.Conv2d and isinstance(model[5], SparseLinear)
    assert isinstance(model[3], nn.ReLU) and isinstance(model[6], nn.ReLU)


def test_sparsify_same_seed_same_masks():
    a, b = sparsify_(small_cnn(), 0.5, seed=4), sparsify_(small_cnn(), 0.5, seed=4)
    assert torch.equal(a[0].weight_mask, b[0].weight_mask)


def test_sparsify_bad_arguments():
    with pytest.raises(ValueError, match="weight_sparsity"):
        sparsify_(small_cnn(), weight_sparsity=1.0)
    with pytest.raises(ValueError, match="activation_sparsity"):
        sparsify_(small_cnn(), 0.5, activation_sparsity=0.0)
    with pytest.raises(ValueError, match="not in the model"):
        sparsify_(small_cnn(), 0.5, exclude=["fc_out"])
