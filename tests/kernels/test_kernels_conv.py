import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from frugalnet.kernels import conv, layouts, linear, pool, reference
from tests.kernels.kernel_testutils import assert_close, sparse_array

conv_case = st.fixed_dictionaries(dict(
    batch=st.integers(1, 3), cin=st.integers(1, 6), cout=st.integers(1, 7), h=st.integers(5, 11),
    w=st.integers(5, 11), k=st.integers(1, 4), stride=st.integers(1, 2), pad=st.integers(0, 2),
    dil=st.integers(1, 2), ws=st.sampled_from([0.0, 0.5, 0.9]), xs=st.sampled_from([0.0, 0.5, 0.9]),
    seed=st.integers(0, 2**16)))


def _make(c):
    rng = np.random.default_rng(c["seed"])
    w = sparse_array(rng, (c["cout"], c["cin"], c["k"], c["k"]), c["ws"])
    x = sparse_array(rng, (c["batch"], c["cin"], c["h"], c["w"]), c["xs"])
    b = rng.standard_normal(c["cout"]).astype(np.float32)
    if min(conv.conv_output_size(n, c["k"], c["stride"], c["pad"], c["dil"]) for n in (c["h"], c["w"])) < 1:
        return w, x, b, torch.zeros(0, 0, 0, 0)
    ref = reference.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), c["stride"], c["pad"],
                           c["dil"])
    return w, x, b, ref


@settings(max_examples=25, deadline=None)
@given(c=conv_case)
def test_sparse_weight_conv_dense_input(c):
    w, x, b, ref = _make(c)
    if ref.shape[2] < 1 or ref.shape[3] < 1:
        return
    p, s, d = c["pad"], c["stride"], c["dil"]
    xp = np.empty((x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p), np.float32)
    conv.pad_nchw(x, p, p, xp)
    ptr, taps, val = layouts.conv_nonzero_taps(w)
    out = np.empty(tuple(ref.shape), np.float32)
    conv.conv_dense_input(xp, ptr, taps, val, b, s, s, d, d, out)
    assert_close(out, ref)


def _max_pooled(ref: torch.Tensor, pool: int) -> torch.Tensor | None:
    """ref max-pooled by pool x pool windows (None when the map is smaller than one window)."""
    if pool == 1:
        return ref
    if min(ref.shape[2:]) < pool:
        return None
    return torch.nn.functional.max_pool2d(ref, pool)


@settings(max_examples=25, deadline=None)
@given(c=conv_case, nchunks=st.integers(1, 2), dense_taps=st.booleans(), pool=st.integers(1, 3))
def test_sparse_weight_conv_sparse_input(c, nchunks, dense_taps, pool):
    w, x, b, ref = _make(c)
    if ref.shape[2] < 1 or ref.shape[3] < 1:
        return
    p, s, d = c["pad"], c["stride"], c["dil"]
    aidx, aval, counts = linear.active_inputs(x.reshape(x.shape[0], -1))
    if dense_taps:   # output-stationary kernel, with a fused max pool
        ref = _max_pooled(ref, pool)
        if ref is None:
            return
        out = np.empty(tuple(ref.shape), np.float32)
        conv.conv_active_dense_taps(aidx, aval, counts, x.shape[2], x.shape[3], layouts.conv_taps_dense(w), b,
                                    s, s, p, p, d, d, out, nchunks, pool)
    else:
        out = np.empty(tuple(ref.shape), np.float32)
        cs = layouts.conv_taps_sparse(w)
        conv.conv_active_sparse_taps(aidx, aval, counts, x.shape[2], x.shape[3], w.shape[2], w.shape[3], cs.ptr,
                                     cs.idx, cs.val, b, s, s, p, p, d, d, out, nchunks)
    assert_close(out, ref)


@settings(max_examples=30, deadline=None)
@given(c=conv_case, cout=st.sampled_from([1, 7, 8, 13, 32, 40, 45, 64, 72]), nchunks=st.integers(1, 2),
       pool=st.integers(1, 3), parallel=st.booleans())
def test_direct_dense_conv_matches_torch(c, cout, nchunks, pool, parallel):
    """Every channel path (32-wide, 8-wide, single) and odd output widths (a lone last pixel)."""
    c = dict(c, cout=cout)
    w, x, b, ref = _make(c)
    if ref.shape[2] < 1 or ref.shape[3] < 1:
        return
    ref = _max_pooled(ref, pool)
    if ref is None:
        return
    p, s, d = c["pad"], c["stride"], c["dil"]
    xp = np.empty((x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p), np.float32)
    conv.pad_nchw(x, p, p, xp)
    out = np.empty(tuple(ref.shape), np.float32)
    conv.conv_direct_dense.pick(parallel)(xp, layouts.conv_taps_dense(w), b, s, s, d, d, out, nchunks, pool)
    assert_close(out, ref)


def test_direct_dense_conv_pool_propagates_nan_like_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 9, 9)).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    w = rng.standard_normal((40, 2, 3, 3)).astype(np.float32)
    b = np.zeros(40, np.float32)
    ref = torch.nn.functional.max_pool2d(reference.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                                          torch.from_numpy(b)), 2)
    out = np.empty(tuple(ref.shape), np.float32)
    conv.conv_direct_dense(x, layouts.conv_taps_dense(w), b, 1, 1, 1, 1, out, 1, 2)
    assert np.array_equal(np.isnan(out), np.isnan(ref.numpy()))
    assert np.isnan(out).any()
    assert_close(np.nan_to_num(out), np.nan_to_num(ref.numpy()))


def test_grouped_conv_via_block_expansion():
    rng = np.random.default_rng(3)
    w = sparse_array(rng, (6, 2, 3, 3), 0.5)
    x = sparse_array(rng, (2, 4, 7, 7), 0.6)
    full = conv.expand_groups(w, 2)
    ref = reference.conv2d(torch.from_numpy(x), torch.from_numpy(w), None, groups=2)
    aidx, aval, counts = linear.active_inputs(x.reshape(2, -1))
    cs = layouts.conv_taps_sparse(full)
    out = np.empty(tuple(ref.shape), np.float32)
    conv.conv_active_sparse_taps(aidx, aval, counts, 7, 7, 3, 3, cs.ptr, cs.idx, cs.val, np.zeros(6, np.float32),
                                 1, 1, 0, 0, 1, 1, out, 1)
    assert_close(out, ref)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 3), s=st.integers(1, 3), pad=st.integers(0, 1), seed=st.integers(0, 999),
       avg=st.booleans())
def test_pooling_matches_torch(k, s, pad, seed, avg):
    if pad * 2 > k:
        return
    x = np.random.default_rng(seed).standard_normal((2, 3, 9, 8)).astype(np.float32)
    xt = torch.from_numpy(x)
    f = torch.nn.functional.avg_pool2d if avg else torch.nn.functional.max_pool2d
    ref = f(xt, k, s, pad)
    out = np.empty(tuple(ref.shape), np.float32)
    (pool.avg_pool if avg else pool.max_pool)(x, k, k, s, s, pad, pad, out)
    assert_close(out, ref)


def test_conv_weight_must_be_4d():
    with pytest.raises(ValueError, match="4-D"):
        layouts.conv_taps_dense(np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("h, w", [(28, 28), (7, 9), (2, 2)])
def test_2x2_max_pool_matches_torch_and_propagates_nan(h, w, parallel):
    rng = np.random.default_rng(h * w)
    x = rng.standard_normal((3, 4, h, w)).astype(np.float32)
    x[1, 2, 0, 1] = np.nan
    x[2, 0, -1, -1] = -np.inf
    out = np.empty((3, 4, h // 2, w // 2), np.float32)
    pool.max_pool_2x2.pick(parallel)(x, out)
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), 2).numpy()
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(out[1, 2, 0, 0])


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("k, s, d", [(5, 1, 1), (3, 2, 1), (3, 1, 2), (2, 3, 2)])
def test_im2col_matches_torch_unfold(k, s, d, parallel):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 3, 11, 13)).astype(np.float32)
    expected = torch.nn.functional.unfold(torch.from_numpy(x), k, dilation=d, stride=s).numpy()
    cols = np.empty(expected.shape, np.float32)
    conv.im2col.pick(parallel)(x, k, k, s, s, d, d, cols)
    np.testing.assert_array_equal(cols, expected)
