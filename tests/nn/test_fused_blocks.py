"""BatchNorm2d -> MaxPool2d(2) -> KWinners2d fused for training (nn.fused_blocks) equals the modules run one by one:
output, input gradient, running statistics and duty cycles, to float rounding; the kernels equal PyTorch's ops."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from frugalnet.kernels import bn_pool as K
from frugalnet.models.cnn import sparse_cnn2
from frugalnet.nn import KWinners2d
from frugalnet.nn.fused_blocks import BNPoolKWTAFunction, FusedSequential, fusable, fuse_blocks_


def _block(c: int, **bn_kw) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c, affine=False, **bn_kw), nn.MaxPool2d(2),
                         KWinners2d(c, 0.1, boost_strength=1.5, duty_cycle_period=40))


def _assert_same_winners(ref: torch.Tensor, got: torch.Tensor, scores: torch.Tensor, k: int) -> None:
    """Winner masks equal, except where a score lies within float rounding of its row's k-th score (a near-tie
    the batch statistics' summation order may flip)."""
    a, b = (ref != 0).flatten(1), (got != 0).flatten(1)
    differ = a != b
    if differ.any():
        s = scores.flatten(1)
        kth = s.topk(k, dim=1).values[:, -1:]
        gap = (s - kth).abs() / kth.abs().clamp_min(1.0)
        assert bool((gap[differ] < 1e-5).all()), "a winner differs away from a near-tie"
        assert int(differ.sum()) <= 4


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("c,h,w", [(16, 12, 12), (16, 13, 11)])
def test_fused_block_matches_modules(channels_last, c, h, w):
    ref = _block(c)
    fused = copy.deepcopy(ref)
    fused.__class__ = FusedSequential
    gen = torch.Generator().manual_seed(0)
    for step in range(3):     # running statistics and duty cycles (so the boost) evolve alike
        x = torch.randn(8, c, h, w, generator=gen) * 2.0 + 0.7
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        assert fusable(fused[0], fused[1], fused[2], xb)
        ya, yb = ref(xa), fused(xb)
        assert isinstance(yb.grad_fn, BNPoolKWTAFunction._backward_cls)
        g = torch.randn(ya.shape, generator=gen)
        ya.backward(g)
        yb.backward(g)
        with torch.no_grad():
            scores = ref[1](nn.functional.batch_norm(x, None, None, training=True)) * ref[2]._factors().view(1, -1, 1, 1) \
                if ref[2]._factors() is not None else ref[1](nn.functional.batch_norm(x, None, None, training=True))
        _assert_same_winners(ya, yb, scores, ref[2]._k(yb[0].numel()))
        both = (ya != 0) & (yb != 0)
        torch.testing.assert_close(yb[both], ya[both], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
        assert xb.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        torch.testing.assert_close(fused[0].running_mean, ref[0].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused[0].running_var, ref[0].running_var, rtol=1e-5, atol=1e-6)
        assert int(fused[0].num_batches_tracked) == int(ref[0].num_batches_tracked) == step + 1
        torch.testing.assert_close(fused[2].duty_cycle, ref[2].duty_cycle, rtol=0, atol=1e-7)
    fused.load_state_dict(ref.state_dict())
    fused.eval(), ref.eval()                                  # eval runs the modules (running statistics)
    x = torch.randn(4, c, h, w, generator=gen)
    torch.testing.assert_close(fused(x), ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("bn_kw", [dict(momentum=None), dict(track_running_stats=False)])
def test_fused_block_momentum_none_and_no_running_stats(bn_kw):
    ref = _block(16, **bn_kw)
    fused = copy.deepcopy(ref)
    fused.__class__ = FusedSequential
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        x = torch.randn(8, 16, 12, 12, generator=gen)
        ya, yb = ref(x), fused(x)                              # no grad needed: the forward alone fuses too
        assert yb.grad_fn is None
        torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    for name, buf in ref[0].named_buffers():
        torch.testing.assert_close(dict(fused[0].named_buffers())[name], buf, rtol=1e-5, atol=1e-6)


def test_not_fused_with_hooks_affine_or_other_pooling():
    x = torch.randn(8, 16, 12, 12)
    block = _block(16)
    assert fusable(block[0], block[1], block[2], x)
    handle = block[2].register_forward_hook(lambda m, i, o: None)
    assert not fusable(block[0], block[1], block[2], x)        # a hook must see the module's own call
    handle.remove()
    assert not fusable(nn.BatchNorm2d(16), block[1], block[2], x)               # affine: the max may flip sign
    assert not fusable(block[0], nn.MaxPool2d(3), block[2], x)
    assert not fusable(block[0], nn.MaxPool2d(2, ceil_mode=True), block[2], x)
    assert not fusable(block[0], block[1], block[2], x.double())
    block.eval()
    assert not fusable(block[0], block[1], block[2], x)


def test_fuse_blocks_marks_nested_sequentials_and_keeps_state_dict():
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Sequential(*_block(16)), nn.Flatten())
    keys = list(model.state_dict())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fuse_blocks_([model])
    assert fuse_blocks_(model) == ["1"]
    assert type(model[1]) is FusedSequential and type(model) is nn.Sequential
    assert list(model.state_dict()) == keys
    y = model(torch.randn(8, 1, 26, 26, requires_grad=True))
    y.sum().backward()
    assert model[0].weight.grad is not None


def test_sparse_cnn2_trains_fused_and_conv2_takes_the_winners_path():
    from frugalnet.nn.sparse_conv_functional import _kwta_winners

    model = sparse_cnn2()
    assert type(model) is FusedSequential
    x = torch.randn(64, 1, 28, 28)
    h = model.pool1(model.bn1(model.conv1(x)))
    a1 = FusedSequential(model.bn1, model.pool1, model.act1)(model.conv1(x))
    assert isinstance(a1.grad_fn, BNPoolKWTAFunction._backward_cls)
    winners = _kwta_winners(a1)
    assert winners is not None and winners.shape == (64, model.act1._k(a1[0].numel()))
    assert h.shape == a1.shape
    torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (64,))).backward()
    assert model.conv1.weight.grad is not None and model.conv2.weight.grad.abs().sum() > 0


def test_stats_pool_kernel_matches_torch_including_nan():
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(3, 7, 9, 5, generator=gen)              # NHWC, odd H and W
    y[0, 2, 4, 1] = float("nan")
    ref_pool, ref_idx = nn.functional.max_pool2d(y.permute(0, 3, 1, 2), 2, return_indices=True)
    yn = y.numpy()
    pooled = np.empty((3, 3, 4, 5), np.float32)
    arg = np.empty((3, 3, 4, 5), np.uint8)
    sums, squares = np.empty(5), np.empty(5)
    shift = np.full(5, 0.25)
    for par in (False, True):
        K.stats_pool2.pick(par)(yn, shift, pooled, arg, sums, squares)
        np.testing.assert_array_equal(pooled, ref_pool.permute(0, 2, 3, 1).numpy())
        rows, cols = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
        idx = (2 * rows[None, :, :, None] + arg // 2) * 9 + 2 * cols[None, :, :, None] + arg % 2
        np.testing.assert_array_equal(idx, ref_idx.permute(0, 2, 3, 1).numpy())
        d = yn.astype(np.float64) - shift
        finite = np.ones(5, bool)
        finite[1] = False                                    # the NaN's channel
        np.testing.assert_allclose(sums[finite], d.sum((0, 1, 2))[finite], rtol=1e-12)
        np.testing.assert_allclose(squares[finite], (d * d).sum((0, 1, 2))[finite], rtol=1e-12)
        assert np.isnan(sums[1])


def test_batchnorm1d_kwinners_block_matches_modules():
    from frugalnet.nn import KWinners
    from frugalnet.nn.active_lists import lists_of
    from frugalnet.nn.fused_blocks import BNKWTAFunction, fusable_1d

    ref = nn.Sequential(nn.BatchNorm1d(300, affine=False), KWinners(300, 0.1, boost_strength=1.5,
                                                                     duty_cycle_period=40))
    fused = copy.deepcopy(ref)
    fused.__class__ = FusedSequential
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        x = torch.randn(32, 300, generator=gen) * 3 + 1
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        assert fusable_1d(fused[0], fused[1], xb)
        ya, yb = ref(xa), fused(xb)
        assert isinstance(yb.grad_fn, BNKWTAFunction._backward_cls) and lists_of(yb) is not None
        assert torch.equal(ya != 0, yb != 0)
        torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
        g = torch.randn(ya.shape, generator=gen)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fused[0].running_var, ref[0].running_var, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused[1].duty_cycle, ref[1].duty_cycle, rtol=0, atol=1e-7)
    assert not fusable_1d(nn.BatchNorm1d(300), fused[1], x)                  # affine: not this block
