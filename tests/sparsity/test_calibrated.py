"""Calibrated one-shot pruning: activation-magnitude (Wanda-style) masks and least-squares reconstruction."""
import pytest
import torch
from torch import nn

from frugalnet.nn.sparse import SparseLinear
from frugalnet.sparsity.calibrated import prune_activation_magnitude_, prune_reconstruct_


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 8))


def test_activation_magnitude_keeps_the_weights_that_see_large_inputs():
    layer = nn.Sequential(nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[1.0, 0.5, 0.2, 0.1]]))
    x = torch.randn(256, 4) * torch.tensor([0.01, 0.01, 10.0, 10.0])    # the small weights see the large inputs
    prune_activation_magnitude_(layer, 0.5, x)
    assert isinstance(layer[0], SparseLinear)
    assert layer[0].weight_mask.tolist() == [[False, False, True, True]]   # magnitude alone would keep the first two
    assert layer[0].weight[0].tolist() == pytest.approx([0.0, 0.0, 0.2, 0.1])


def test_every_row_keeps_the_same_count_and_weights_are_untouched():
    model = _mlp()
    before = model[0].weight.detach().clone()
    prune_activation_magnitude_(model, 0.75, [torch.randn(16, 32) for _ in range(3)])
    for layer, fan_in in ((model[0], 32), (model[2], 48)):
        assert layer.weight_mask.sum(1).tolist() == [round(fan_in / 4)] * layer.out_features
    kept = model[0].weight_mask
    assert torch.equal(model[0].weight[kept], before[kept])


def test_reconstruction_recovers_a_layer_whose_inputs_are_low_rank():
    torch.manual_seed(0)
    z = torch.randn(512, 3)
    x = z @ torch.randn(3, 32) + 0.5                    # rank 3 plus a constant: 4 kept inputs + bias suffice
    dense = nn.Sequential(nn.Linear(32, 10))
    want = dense(x).detach()
    masked = nn.Sequential(nn.Linear(32, 10))
    masked.load_state_dict(dense.state_dict())
    prune_activation_magnitude_(masked, 0.875, x)
    fitted = nn.Sequential(nn.Linear(32, 10))
    fitted.load_state_dict(dense.state_dict())
    prune_reconstruct_(fitted, 0.875, x, damping=1e-9)
    assert fitted[0].weight_mask.sum(1).tolist() == [4] * 10
    with torch.no_grad():
        err_mask = float((masked(x) - want).pow(2).mean())
        err_fit = float((fitted(x) - want).pow(2).mean())
    assert err_fit < 1e-6 * float(want.pow(2).mean()) < err_mask


def test_reconstruction_layer_by_layer_beats_plain_masking_on_an_mlp():
    x = [torch.randn(64, 32) for _ in range(4)]
    dense = _mlp()
    want = torch.cat([dense(b) for b in x]).detach()
    results = {}
    for name, fn in (("mask", prune_activation_magnitude_), ("fit", prune_reconstruct_)):
        model = _mlp()
        fn(model, 0.8, x)
        with torch.no_grad():
            results[name] = float((torch.cat([model(b) for b in x]) - want).pow(2).mean())
        weights = torch.cat([model[0].weight.flatten(), model[2].weight.flatten()])
        assert float((weights == 0).float().mean()) == pytest.approx(0.8, abs=0.02)
    assert results["fit"] < 0.8 * results["mask"]       # full-rank random inputs: measured 0.64x


def test_a_layer_without_bias_keeps_none():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 4, bias=False))
    prune_reconstruct_(model, 0.5, torch.randn(64, 16))
    assert model[0].bias is None
    assert model[0].weight_mask.sum(1).tolist() == [8] * 4


def test_filter_fn_chooses_the_layers():
    model = _mlp()
    prune_reconstruct_(model, 0.5, torch.randn(32, 32), filter_fn=lambda m, name: name == "2")
    assert type(model[0]) is nn.Linear and isinstance(model[2], SparseLinear)


@pytest.mark.parametrize("fn", [prune_activation_magnitude_, prune_reconstruct_])
def test_bad_input_is_refused_up_front(fn):
    with pytest.raises(ValueError, match="sparsity"):
        fn(_mlp(), 1.0, torch.randn(4, 32))
    with pytest.raises(ValueError, match="calibration inputs"):
        fn(_mlp(), 0.5, [])
    with pytest.raises(ValueError, match="no dense nn.Linear"):
        fn(nn.Sequential(nn.ReLU()), 0.5, torch.randn(4, 32))
    with pytest.raises(ValueError, match="no dense nn.Linear"):
        fn(_mlp(), 0.5, torch.randn(4, 32), filter_fn=lambda m, n: False)


def test_damping_must_be_positive():
    with pytest.raises(ValueError, match="damping"):
        prune_reconstruct_(_mlp(), 0.5, torch.randn(4, 32), damping=0)
