"""SparseConv2d's training Function: every path of every product equals PyTorch's masked-dense convolution."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from frugalnet.kernels import conv_train as CT
from frugalnet.nn import SparseConv2d
from frugalnet.nn import sparse_functional as SF


@pytest.mark.parametrize("density", [1.0, 0.1, 0.0])
@pytest.mark.parametrize("shape", [(3, 1, 9, 8, 4, 3), (2, 5, 7, 7, 6, 5)])
def test_kernels_equal_torch(shape, density):
    b, c, h, w, o, k = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen) * (torch.rand(b, c, h, w, generator=gen) < density)
    wt = torch.randn(o, c, k, k, generator=gen)
    bias = torch.randn(o, generator=gen)
    ref = F.conv2d(x, wt, bias)
    np.testing.assert_allclose(CT.conv2d_active(x.numpy(), wt.numpy(), bias.numpy()), ref.numpy(), rtol=1e-5,
                               atol=1e-5)
    gy = torch.randn_like(ref)
    gx_ref, gw_ref, _ = torch.ops.aten.convolution_backward(gy, x, wt, None, [1, 1], [0, 0], [1, 1], False,
                                                            [0, 0], 1, [True, True, False])
    gwt = np.empty((c, k, k, o), np.float32)
    gycl = gy.permute(0, 2, 3, 1).contiguous().numpy()
    for par in (False, True):
        CT.conv_gw_active.pick(par)(x.numpy(), gycl, gwt)
        np.testing.assert_allclose(gwt.transpose(3, 0, 1, 2), gw_ref.numpy(), rtol=1e-4, atol=1e-4)
    cols = (torch.from_numpy(gycl.reshape(-1, o)) @ wt.view(o, -1)).numpy().reshape(b, h - k + 1, w - k + 1, c, k, k)
    gx = np.empty(x.shape, np.float32)
    CT.col2im_add(cols, gx)
    np.testing.assert_allclose(gx, gx_ref.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kh,kw", [(3, 3), (2, 4), (1, 1)])
@pytest.mark.parametrize("parallel", [False, True])
def test_im2col_rows_equals_unfold(kh, kw, parallel):
    x = torch.randn(3, 2, 6, 7, generator=torch.Generator().manual_seed(1))
    oh, ow = 6 - kh + 1, 7 - kw + 1
    cols = np.full((3 * oh * ow, 2 * kh * kw), np.nan, np.float32)
    CT.im2col_rows.pick(parallel)(x.numpy(), kh, kw, cols)
    ref = F.unfold(x, (kh, kw)).transpose(1, 2).reshape(-1, 2 * kh * kw)
    np.testing.assert_array_equal(cols, ref.numpy())


@pytest.mark.parametrize("mode", ["sparse", "dense", "auto"])
def test_module_every_path_equals_masked_dense(mode, monkeypatch):
    monkeypatch.setattr(SF, "MIN_KERNEL_WORK", 0)
    torch.manual_seed(0)
    layer = SparseConv2d(4, 6, 3, 0.5, seed=0)
    layer.kernel_mode = mode
    x = torch.relu(torch.randn(5, 4, 8, 8)).requires_grad_(True)
    gy = torch.randn(5, 6, 6, 6)
    keys = ("conv_fwd", "conv_gx", "conv_gw")
    if mode == "sparse":
        names = {"conv_fwd": ["active/0", "active/1"], "conv_gx": ["gemm"],
                 "conv_gw": ["active/0", "active/1", "im2col"]}
    else:
        names = {k: [None] for k in keys}
    real_pick = SF._pick
    for i in range(3):                         # force each kernel path in turn (serial, parallel, im2col)
        SF.clear_choices()
        if mode == "sparse":
            def forced(key, cands, i=i):
                name = names[key[0]][min(i, len(names[key[0]]) - 1)]
                return cands[name]() if name in cands else real_pick(key, cands)
            monkeypatch.setattr(SF, "_pick", forced)
        x.grad = None
        layer.zero_grad()
        layer(x).mul(gy).sum().backward()
        xr = x.detach().clone().requires_grad_(True)
        wr = layer.weight.detach().clone().requires_grad_(True)
        br = layer.bias.detach().clone().requires_grad_(True)
        F.conv2d(xr, wr * layer.weight_mask, br).mul(gy).sum().backward()
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.weight.grad, wr.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.bias.grad, br.grad, rtol=1e-4, atol=1e-5)
        assert int((layer.weight.grad[~layer.weight_mask] != 0).sum()) == 0


def test_other_configurations_take_pytorch():
    layer = SparseConv2d(2, 3, 3, 0.5, padding=1, seed=0)
    layer.kernel_mode = "sparse"
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight * layer.weight_mask, layer.bias, padding=1))


def test_dense_path_output_is_channels_last_and_exact_for_one_channel():
    from frugalnet.nn.sparse_conv_functional import _dense_channels_last

    x, w, b = torch.randn(3, 1, 9, 9), torch.randn(4, 1, 3, 3), torch.randn(4)
    y = _dense_channels_last(x, w, b)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, F.conv2d(x, w, b))


@pytest.mark.parametrize("density", [0.2, 1.0, 0.0])
@pytest.mark.parametrize("parallel", [False, True])
def test_fused_winner_grads_kernel_equals_torch(density, parallel):
    from frugalnet.kernels import kwta_conv as KC

    gen = torch.Generator().manual_seed(2)
    b, c, h, w, o, k = 3, 4, 9, 8, 5, 3
    x = torch.randn(b, c, h, w, generator=gen) * (torch.rand(b, c, h, w, generator=gen) < density)
    wt = torch.randn(o, c, k, k, generator=gen)
    gy = torch.randn(b, o, h - k + 1, w - k + 1, generator=gen)
    gx_ref, gw_ref, _ = torch.ops.aten.convolution_backward(gy, x, wt, None, [1, 1], [0, 0], [1, 1], False,
                                                            [0, 0], 1, [True, True, False])
    gycl = gy.permute(0, 2, 3, 1).contiguous().numpy()
    wtn = np.ascontiguousarray(wt.numpy().transpose(1, 2, 3, 0))
    gwt = np.full((c, k, k, o), np.nan, np.float32)
    gx = np.full(x.shape, np.nan, np.float32)
    KC.conv_grads_active.pick(parallel)(x.numpy(), gycl, wtn, gwt, gx)
    np.testing.assert_allclose(gwt.transpose(3, 0, 1, 2), gw_ref.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, (gx_ref * (x != 0)).numpy(), rtol=1e-4, atol=1e-4)
    # every place listed as a winner gets its gradient, zero-valued ones included
    aidx = np.stack([np.arange(0, c * h * w, 3, dtype=np.int32)] * b)
    KC.conv_gx_at_zero_winners.pick(parallel)(x.numpy(), aidx, gycl, wtn, gx)
    listed = np.zeros(x.shape, bool).reshape(b, -1)
    listed[:, aidx[0]] = True
    want = (gx_ref * torch.from_numpy(listed.reshape(x.shape) | (x != 0).numpy())).numpy()
    np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-4)


def _kwta_conv_pair(mode: str, seed: int = 0):
    from frugalnet.nn import KWinners2d

    torch.manual_seed(seed)
    act = KWinners2d(8, 0.2, boost_strength=1.5)
    conv = SparseConv2d(8, 16, 5, 0.5, seed=seed)
    conv.kernel_mode = mode
    return act, conv


@pytest.mark.parametrize("zeros", [False, True])
def test_conv_after_kwinners2d_grads_equal_masked_dense(zeros, monkeypatch):
    """KWinners2d -> SparseConv2d: the input gradient computed at the winners only gives the k-WTA's input, the
    weight and the bias the gradients of PyTorch's masked-dense convolution (zero-valued winners included)."""
    monkeypatch.setattr(SF, "MIN_KERNEL_WORK", 0)
    SF.clear_choices()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 8, 12, 12, generator=gen)
    if zeros:   # most of the input 0: zeros tie for the last winning places and carry gradient
        x = torch.relu(x) * (torch.rand(x.shape, generator=gen) < 0.15)
    gy = torch.randn(6, 16, 8, 8, generator=gen)
    grads = []
    for mode in ("sparse", "dense"):
        act, conv = _kwta_conv_pair(mode)
        xi = x.clone().requires_grad_(True)
        a = act(xi)
        conv(a).mul(gy).sum().backward()
        grads.append((xi.grad, conv.weight.grad, conv.bias.grad))
    assert any(k[0] == "conv_grads_winners" for k in SF.choices()), "the winners-only backward was not taken"
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    act, conv = _kwta_conv_pair("dense")
    xr = x.clone().requires_grad_(True)
    a = act(xr)
    F.conv2d(a, conv.weight * conv.weight_mask, conv.bias).mul(gy).sum().backward()
    torch.testing.assert_close(grads[0][0], xr.grad, rtol=1e-4, atol=1e-5)


def test_hooked_or_modified_kwta_output_takes_the_full_input_gradient(monkeypatch):
    from frugalnet.nn.sparse_conv_functional import _kwta_winners

    monkeypatch.setattr(SF, "MIN_KERNEL_WORK", 0)
    act, _ = _kwta_conv_pair("sparse")
    x = torch.randn(4, 8, 12, 12, requires_grad=True)   # large enough for the selection kernel
    assert _kwta_winners(act(x)) is not None
    hooked = act(x)
    hooked.register_hook(lambda g: g)
    assert _kwta_winners(hooked) is None
    retained = act(x)
    retained.retain_grad()
    assert _kwta_winners(retained) is None
    written = act(x)
    with torch.no_grad():
        written.mul_(2)
    assert _kwta_winners(written) is None
    assert _kwta_winners(torch.relu(x)) is None
