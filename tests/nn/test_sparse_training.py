"""SparseLinear training on the sparse kernels (nn.sparse_functional) and masks that hold under every update."""
import copy
import pickle

import pytest
import torch
from torch import nn

import frugalnet
from frugalnet.nn import SparseConv2d, SparseLinear
from frugalnet.nn import sparse_functional as SF


def _inputs(batch, n_in, n_out, x_density, gy_density, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n_in, generator=g) * (torch.rand(batch, n_in, generator=g) < x_density)
    gy = torch.randn(batch, n_out, generator=g) * (torch.rand(batch, n_out, generator=g) < gy_density)
    return x, gy


def _reference(layer, x, gy):
    """PyTorch's masked-dense forward and gradients."""
    xr = x.clone().requires_grad_(True)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = None if layer.bias is None else layer.bias.detach().clone().requires_grad_(True)
    y = nn.functional.linear(xr, w * layer.weight_mask, b)
    y.backward(gy)
    return y.detach(), xr.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("x_density,gy_density", [(1.0, 1.0), (0.1, 0.05), (0.1, 1.0), (1.0, 0.05)])
@pytest.mark.parametrize("bias", [True, False])
def test_every_path_of_every_product_equals_masked_dense(x_density, gy_density, bias):
    layer = SparseLinear(70, 45, 0.8, bias=bias, seed=0)
    x, gy = _inputs(19, 70, 45, x_density, gy_density)
    y_ref, gx_ref, gw_ref, _ = _reference(layer, x, gy)
    lay = SF.layout_of(layer)
    vals = SF._Values(layer.weight, lay)
    xp = SF._Transposed(x.numpy())
    fwd = SF._forward_candidates(x, xp, vals, layer.weight_mask, layer.bias, "auto")
    gyp = SF._Transposed(gy.numpy())
    gx = SF._grad_input_candidates(gy, gyp, vals, layer.weight_mask, "auto")
    gw = SF._grad_weight_candidates(gy, gyp, x, xp, lay, layer.weight_mask, "auto")
    assert {"dense", "csr/0", "csc/0"} <= set(fwd) and {"dense", "csc_t/0", "scatter/0"} <= set(gx)
    assert {"dense", "sddmm/0", "sddmm_gy/0", "sddmm_both/0"} <= set(gw)
    for name, fn in fwd.items():
        torch.testing.assert_close(fn(), y_ref, rtol=1e-5, atol=1e-5, msg=f"forward {name}")
    for name, fn in gx.items():
        torch.testing.assert_close(fn(), gx_ref, rtol=1e-5, atol=1e-5, msg=f"grad_input {name}")
    for name, fn in gw.items():
        out = fn()
        torch.testing.assert_close(out, gw_ref, rtol=1e-5, atol=1e-5, msg=f"grad_weight {name}")
        assert (out[~layer.weight_mask] == 0).all()


@pytest.mark.parametrize("mode", ["auto", "sparse", "dense"])
def test_module_forward_backward_equal_masked_dense_in_each_mode(mode):
    torch.manual_seed(0)
    layer = SparseLinear(40, 30, 0.7, seed=1)
    layer.kernel_mode = mode
    x = torch.randn(4, 6, 40).relu_()            # leading dims and ReLU-sparse input
    gy = torch.randn(4, 6, 30)
    xr = x.clone().requires_grad_(True)
    x.requires_grad_(True)
    y = layer(x)
    y.backward(gy)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    nn.functional.linear(xr, w * layer.weight_mask, b).backward(gy)
    assert y.shape == (4, 6, 30)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_bad_kernel_mode_raises():
    layer = SparseLinear(8, 4, 0.5)
    layer.kernel_mode = "fast"
    with pytest.raises(ValueError, match="kernel_mode"):
        layer(torch.randn(2, 8))
    with pytest.raises(ValueError, match="kernel mode"):
        SF.set_kernel_mode("fast")


def test_layout_follows_mask_changes():
    layer = SparseLinear(30, 20, 0.5, seed=0)
    x = torch.randn(5, 30)
    layer(x)
    first = SF.layout_of(layer)
    new = torch.rand(20, 30, generator=torch.Generator().manual_seed(2)) > 0.7
    layer.set_mask_(new)                                    # bumps mask_version
    assert SF.layout_of(layer) is not first
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight * new, layer.bias))
    second = SF.layout_of(layer)
    with torch.no_grad():
        layer.weight_mask[:, :3] = False                    # written in place, no set_mask_
    assert SF.layout_of(layer) is not second
    torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight * layer.weight_mask, layer.bias))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(SparseConv2d(1, 4, 3, 0.6, seed=0), nn.ReLU(), nn.Flatten(),
                         SparseLinear(4 * 6 * 6, 16, 0.8, seed=1), nn.ReLU(), SparseLinear(16, 3, 0.5, seed=2))


def _sparse_layers(model):
    return [m for m in model.modules() if isinstance(m, (SparseLinear, SparseConv2d))]


def _assert_masks_hold(model, x):
    """Outputs depend only on masked weights, and stored weights outside each mask are exactly zero."""
    layers = _sparse_layers(model)
    assert layers
    for layer in layers:
        assert int((layer.weight[~layer.weight_mask] != 0).sum()) == 0
    before = model(x)
    with torch.no_grad():
        for layer in layers:
            layer.weight.add_(torch.randn_like(layer.weight) * ~layer.weight_mask)   # junk outside the mask
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def _train(model, opt, steps=5):
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for layer in _sparse_layers(model):    # the gradient is zero outside the mask, whatever the path
            assert int((layer.weight.grad[~layer.weight_mask] != 0).sum()) == 0
        opt.step()
    return x


@pytest.fixture(params=["sparse", "dense"])
def kernel_mode(request):
    """Run a test on the kernels and on the masked-dense path (the models here are below auto's size cut)."""
    SF.set_kernel_mode(request.param)
    yield request.param
    SF.set_kernel_mode("auto")


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
], ids=["sgd-momentum", "adam", "adamw-wd"])
def test_masks_hold_under_optimizers(make_opt, kernel_mode):
    model = _model()
    x = _train(model, make_opt(model.parameters()))
    _assert_masks_hold(model, x)


def test_masks_hold_with_optimizer_built_before_sparsify(kernel_mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 20), torch.randint(0, 3, (16,))
    nn.functional.cross_entropy(model(x), y).backward()   # dense momentum before conversion
    opt.step()
    frugalnet.sparsify_(model, weight_sparsity=0.75)
    opt.add_param_group({"params": [p for p in model.parameters()
                                    if not any(p is q for g in opt.param_groups for q in g["params"])]})
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    _assert_masks_hold(model, x)


def test_masks_hold_under_manual_update(kernel_mode):
    model = _model()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    before = [layer.weight.detach().clone() for layer in _sparse_layers(model)]
    for _ in range(3):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
    for layer, w0 in zip(_sparse_layers(model), before):
        assert not torch.equal(layer.weight, w0)          # the kept weights did train
    _assert_masks_hold(model, x)


def test_masks_hold_after_loading_a_dense_state_dict(kernel_mode):
    model = _model()
    dense = {k: (torch.randn_like(v) if k.endswith("weight") else v) for k, v in model.state_dict().items()}
    model.load_state_dict(dense)
    assert set(model.state_dict()) == set(dense)          # format unchanged: weight, bias, weight_mask
    assert any(k.endswith("weight_mask") for k in dense)
    _assert_masks_hold(model, torch.randn(2, 1, 8, 8))


def test_copies_train_and_pickle_without_the_cached_layout():
    layer = SparseLinear(12, 6, 0.5, seed=0)
    layer.kernel_mode = "sparse"
    layer(torch.randn(3, 12)).sum().backward()
    assert "_train_layout" in layer.__dict__
    clone = pickle.loads(pickle.dumps(layer))
    assert "_train_layout" not in clone.__dict__
    twin = copy.deepcopy(layer)
    x = torch.randn(4, 12)
    torch.testing.assert_close(clone(x), layer(x))
    torch.testing.assert_close(twin(x), layer(x))


def test_optimizer_hooks_still_mask_gradients_not_made_by_the_function():
    layer = SparseLinear(10, 4, 0.5, seed=0)
    layer.kernel_mode = "sparse"
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    layer(torch.randn(3, 10)).sum().backward()
    layer.weight.grad += 1.0                               # e.g. a regulariser: dense gradient
    opt.step()
    assert int((opt.state[layer.weight]["momentum_buffer"][~layer.weight_mask] != 0).sum()) == 0
    assert int((layer.weight[~layer.weight_mask] != 0).sum()) == 0


def test_replaced_mask_of_wrong_shape_raises():
    layer = SparseLinear(8, 4, 0.5)
    layer.weight_mask = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="set_mask_"):
        layer(torch.randn(2, 8))


def test_small_layers_take_the_dense_path_untimed_in_auto():
    SF.clear_choices()
    layer = SparseLinear(24, 16, 0.75, seed=0)
    layer(torch.randn(6, 24, requires_grad=True)).sum().backward()
    assert SF.choices() == {} and int((layer.weight.grad[~layer.weight_mask] != 0).sum()) == 0


def test_timed_choice_is_cached_per_shape_and_density():
    SF.clear_choices()
    layer = SparseLinear(256, 128, 0.75, seed=0)
    x = torch.randn(40, 256, requires_grad=True)
    layer(x).sum().backward()
    picked = SF.choices()
    assert {k[0] for k in picked} == {"fwd", "gx", "gw"}
    assert all(v in SF.timings()[k] for k, v in picked.items())
    layer(x).sum().backward()                      # same shape and density: nothing new to time
    assert SF.choices() == picked
    assert SF.density_bucket(torch.zeros(4, 10)) == 0 and SF.density_bucket(torch.ones(4, 10)) == 8
    assert SF.density_bucket(torch.eye(64)[:, :64]) == 2      # 1/64 nonzero -> ceil(log2(4))
