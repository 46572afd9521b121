import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from frugalnet.kernels import complementary as ck, linear, reference
from frugalnet.nn.masks import complementary
from tests.kernels.kernel_testutils import assert_close, sparse_array


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), units=st.integers(1, 12), per=st.integers(1, 8), batch=st.integers(1, 4),
       xs=st.sampled_from([0.0, 0.5, 0.9]), seed=st.integers(0, 2**16))
def test_packed_linear_routes_products_to_their_kernel(n, units, per, batch, xs, seed):
    rng = np.random.default_rng(seed)
    n_in = n * per
    masks = complementary((units, n_in), n, torch.Generator().manual_seed(seed)).numpy()
    weights = rng.standard_normal((n, units, n_in)).astype(np.float32) * masks
    biases = rng.standard_normal((n, units)).astype(np.float32)
    dense, owner = ck.pack(weights, masks)
    x = sparse_array(rng, (batch, n_in), xs)
    aidx, aval, counts = linear.active_inputs(x)
    out = np.empty((batch, n, units), np.float32)
    ck.comp_linear_active(np.ascontiguousarray(dense.T), np.ascontiguousarray(owner.T), aidx, aval, counts, biases,
                          out)
    assert_close(out, reference.complementary_linear(torch.from_numpy(x), torch.from_numpy(weights),
                                                     torch.from_numpy(biases)))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), cout=st.integers(1, 5), cin=st.integers(1, 3), k=st.integers(1, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 1), xs=st.sampled_from([0.0, 0.7]), seed=st.integers(0, 999))
def test_packed_conv_routes_products_to_their_kernel(n, cout, cin, k, stride, pad, xs, seed):
    rng = np.random.default_rng(seed)
    fan = cin * k * k
    if fan % n:
        return
    masks = complementary((cout, cin, k, k), n, torch.Generator().manual_seed(seed)).numpy()
    weights = rng.standard_normal((n, cout, cin, k, k)).astype(np.float32) * masks
    biases = rng.standard_normal((n, cout)).astype(np.float32)
    dense, owner = ck.pack(weights, masks)
    x = sparse_array(rng, (2, cin, 7, 6), xs)
    ref = reference.complementary_conv2d(torch.from_numpy(x), torch.from_numpy(weights), torch.from_numpy(biases),
                                         stride, pad)
    aidx, aval, counts = linear.active_inputs(x.reshape(2, -1))
    out = np.empty(tuple(ref.shape), np.float32)
    ck.comp_conv_active(aidx, aval, counts, 7, 6, np.ascontiguousarray(dense.transpose(1, 2, 3, 0)),
                        np.ascontiguousarray(owner.transpose(1, 2, 3, 0)), biases, stride, stride, pad, pad, 1, 1,
                        out)
    assert_close(out, ref)


def test_pack_rejects_overlap():
    m = np.ones((2, 3, 4), bool)
    with pytest.raises(ValueError, match="overlap"):
        ck.pack(np.ones((2, 3, 4), np.float32), m)
