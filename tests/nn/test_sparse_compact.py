"""Compact storage of SparseLinear (only the mask's values are a Parameter): gradients equal the masked-dense
reference, masks hold under every optimizer, state dicts round-trip in the dense format, misuse is refused."""
import copy

import pytest
import torch
from torch import nn

from frugalnet.nn import SparseConv2d, SparseLinear
from frugalnet.nn import sparse_functional as SF


def _pair(n_in, n_out, sparsity, bias=True, seed=0):
    torch.manual_seed(seed)
    dense = SparseLinear(n_in, n_out, sparsity, bias=bias, seed=seed)
    torch.manual_seed(seed)
    compact = SparseLinear(n_in, n_out, sparsity, bias=bias, seed=seed, compact=True)
    return dense, compact


def test_compact_layer_starts_with_the_dense_layers_weights():
    dense, compact = _pair(30, 20, 0.7)
    assert [n for n, _ in compact.named_parameters()] == ["bias", "weight_values"]
    assert compact.weight_values.shape == (int(dense.weight_mask.sum()),)
    assert torch.equal(compact.weight, dense.weight) and torch.equal(compact.bias, dense.bias)
    assert "compact" in repr(compact)


@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("shape", [(70, 45, 19, 0.8), (33, 7, 1, 0.5), (5, 3, 2, 0.0), (129, 64, 31, 0.9)])
@pytest.mark.parametrize("x_density", [1.0, 0.1])
def test_compact_gradients_equal_masked_dense_autograd(mode, shape, x_density):
    n_in, n_out, batch, sparsity = shape
    _, layer = _pair(n_in, n_out, sparsity, seed=batch)
    layer.kernel_mode = mode
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n_in, generator=g) * (torch.rand(batch, n_in, generator=g) < x_density)
    gy = torch.randn(batch, n_out, generator=g) * (torch.rand(batch, n_out, generator=g) < 0.3)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    y_ref = nn.functional.linear(xr, w * layer.weight_mask, b)
    y_ref.backward(gy)
    xc = x.clone().requires_grad_(True)
    y = layer(xc)
    y.backward(gy)
    torch.testing.assert_close(y, y_ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xc.grad, xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight_values.grad, w.grad[layer.weight_mask], rtol=1e-5, atol=1e-5)


def test_every_compact_weight_gradient_candidate_equals_the_reference():
    _, layer = _pair(70, 45, 0.8)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(19, 70, generator=g).relu()
    gy = torch.randn(19, 45, generator=g) * (torch.rand(19, 45, generator=g) < 0.2)
    ref = (gy.t() @ x)[layer.weight_mask]
    lay = SF.layout_of(layer)
    cands = SF._grad_weight_candidates(gy, SF._Transposed(gy.numpy()), x, SF._Transposed(x.numpy()), lay,
                                       layer.weight_mask, "auto", compact=True)
    assert {"dense", "sddmm/0", "sddmm_gy/0", "sddmm_both/0"} <= set(cands)
    for name, fn in cands.items():
        torch.testing.assert_close(fn(), ref, rtol=1e-5, atol=1e-5, msg=f"grad_weight {name}")


def _train(layer, opt_cls, steps=3, **kw):
    opt = opt_cls(layer.parameters(), lr=0.05, **kw)
    g = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x = torch.randn(64, layer.in_features, generator=g).relu()
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    return layer


@pytest.mark.parametrize("opt_cls,kw", [(torch.optim.SGD, {}), (torch.optim.SGD, {"momentum": 0.9}),
                                        (torch.optim.Adam, {}), (torch.optim.AdamW, {"weight_decay": 0.1})])
def test_compact_training_matches_dense_training_and_masks_hold(opt_cls, kw):
    dense, compact = _pair(256, 128, 0.9)
    for layer in (dense, compact):
        layer.kernel_mode = "sparse"
        _train(layer, opt_cls, **kw)
    w = compact.weight
    assert (w[~compact.weight_mask] == 0).all()
    assert int((w != 0).sum()) <= int(compact.weight_mask.sum())
    torch.testing.assert_close(w, dense.weight, rtol=1e-4, atol=1e-5)


def test_state_dict_round_trips_in_the_dense_format_both_ways():
    dense, compact = _pair(40, 30, 0.75)
    _train(compact, torch.optim.SGD, momentum=0.9)
    sd = compact.state_dict()
    assert list(sd) == ["weight", "bias", "weight_mask"]
    assert (sd["weight"][~sd["weight_mask"]] == 0).all()
    dense.load_state_dict(sd)
    assert torch.equal(dense.weight, compact.weight)
    other = SparseLinear(40, 30, 0.75, seed=7, compact=True)      # another mask, same number of nonzeros
    values_param = other.weight_values
    other.load_state_dict(dense.state_dict())
    assert other.weight_values is values_param                    # loaded in place: optimizers keep it
    assert torch.equal(other.weight_mask, compact.weight_mask) and torch.equal(other.weight, compact.weight)
    x = torch.randn(5, 40)
    torch.testing.assert_close(other(x), compact(x))
    denser = SparseLinear(40, 30, 0.5, seed=1, compact=True)        # more nonzeros: the Parameter is replaced
    denser.load_state_dict(sd)
    assert denser.weight_values.numel() == int(sd["weight_mask"].sum())
    torch.testing.assert_close(denser(x), compact(x))


def test_switching_back_and_forth_and_copies_keep_the_weights():
    dense, compact = _pair(40, 30, 0.75)
    clone = copy.deepcopy(compact)
    assert clone.compact and torch.equal(clone.weight, compact.weight)
    compact.compact_(False)
    assert not compact.compact and isinstance(compact.weight, nn.Parameter)
    assert torch.equal(compact.weight, dense.weight)
    assert compact.compact_(True) is compact and compact.compact


def test_misuse_is_refused_with_clear_errors():
    _, layer = _pair(20, 10, 0.5)
    with pytest.raises(ValueError, match="compact_\\(False\\)"):
        layer.set_mask_(torch.ones(10, 20, dtype=torch.bool))
    with pytest.raises(TypeError, match="compact_\\(False\\)"):
        layer.weight = torch.zeros(10, 20)
    layer.weight_mask.copy_(~layer.weight_mask)                      # written behind its back
    with pytest.raises(ValueError, match="mask of a compact layer was changed"):
        layer.kernel_mode = "sparse"
        layer(torch.randn(2, 20))
    with pytest.raises(ValueError, match="SparseLinear and SparseConv2d"):
        from frugalnet.nn.sparse_compact import to_compact
        to_compact(nn.Linear(3, 4))
    with pytest.raises(RuntimeError, match="size mismatch"):
        SparseLinear(20, 10, 0.5, compact=True).load_state_dict(SparseLinear(21, 10, 0.5).state_dict())


def test_dynamic_sparsity_refuses_compact_layers():
    from frugalnet.sparsity.dynamic import DynamicSparsity

    model = nn.Sequential(SparseLinear(20, 10, 0.5, compact=True))
    with pytest.raises(ValueError, match="compact_\\(False\\)"):
        DynamicSparsity(model)


def test_export_of_a_compact_layer_warns_and_keeps_the_outputs():
    layer = SparseLinear(16, 8, 0.5, seed=0, compact=True).eval()
    x = torch.randn(2, 16)
    with pytest.warns(UserWarning, match="compact_\\(False\\)"):
        program = torch.export.export(layer, (x,))
    torch.testing.assert_close(program.module()(x), layer(x))


def _conv_pair(padding=0, seed=0):
    torch.manual_seed(seed)
    dense = SparseConv2d(4, 6, 3, 0.5, padding=padding, seed=seed)
    torch.manual_seed(seed)
    return dense, SparseConv2d(4, 6, 3, 0.5, padding=padding, seed=seed, compact=True)


@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
@pytest.mark.parametrize("padding,batch", [(0, 5), (0, 1), (1, 3)])
def test_compact_conv_gradients_equal_masked_dense_autograd(mode, padding, batch, monkeypatch):
    monkeypatch.setattr(SF, "MIN_KERNEL_WORK", 0)
    _, layer = _conv_pair(padding)
    layer.kernel_mode = mode
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 4, 8, 7, generator=g).relu()
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    y_ref = nn.functional.conv2d(xr, w * layer.weight_mask, b, padding=padding)
    gy = torch.randn(y_ref.shape, generator=g)
    y_ref.backward(gy)
    xc = x.clone().requires_grad_(True)
    y = layer(xc)
    y.backward(gy)
    torch.testing.assert_close(y, y_ref.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xc.grad, xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.weight_values.grad, w.grad[layer.weight_mask], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opt_cls,kw", [(torch.optim.SGD, {"momentum": 0.9}),
                                        (torch.optim.AdamW, {"weight_decay": 0.1})])
def test_compact_conv_training_matches_dense_and_state_dicts_interchange(opt_cls, kw, monkeypatch):
    monkeypatch.setattr(SF, "MIN_KERNEL_WORK", 0)
    dense, compact = _conv_pair()
    g = torch.Generator().manual_seed(4)
    xs = [torch.randn(6, 4, 9, 9, generator=g).relu() for _ in range(3)]
    for layer in (dense, compact):
        layer.kernel_mode = "sparse"
        opt = opt_cls(layer.parameters(), lr=0.05, **kw)
        for x in xs:
            opt.zero_grad()
            layer(x).square().mean().backward()
            opt.step()
    assert (compact.weight[~compact.weight_mask] == 0).all()
    torch.testing.assert_close(compact.weight, dense.weight, rtol=1e-4, atol=1e-5)
    sd = compact.state_dict()
    assert list(sd) == ["weight", "bias", "weight_mask"]
    other = SparseConv2d(4, 6, 3, 0.5, seed=9, compact=True)
    other.load_state_dict(sd)
    torch.testing.assert_close(other(xs[0]), compact(xs[0]))
    compact.weight_mask.copy_(~compact.weight_mask)
    with pytest.raises(ValueError, match="mask of a compact layer was changed"):
        compact(xs[0])


def test_compact_layers_helper_switches_linears_and_optionally_convs():
    from frugalnet.nn.sparse_compact import compact_layers_

    model = nn.Sequential(SparseConv2d(1, 2, 3, 0.5), nn.Flatten(), SparseLinear(2 * 4 * 4, 3, 0.5))
    assert compact_layers_(model) == ["2"] and model[2].compact and not model[0].compact
    assert compact_layers_(model, convs=True) == ["0", "2"] and model[0].compact
    assert compact_layers_(model, False) == ["0", "2"] and not model[0].compact and not model[2].compact
