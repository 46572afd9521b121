import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from frugalnet.kernels import layouts, linear, reference
from tests.kernels.kernel_testutils import assert_close, sparse_array

dims = st.integers(1, 70)
fractions = st.sampled_from([0.0, 0.3, 0.9, 0.99])


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), n_in=dims, n_out=dims, ws=fractions, seed=st.integers(0, 2**16),
       transposed=st.booleans())
def test_sparse_weight_dense_input_matches_torch(batch, n_in, n_out, ws, seed, transposed):
    rng = np.random.default_rng(seed)
    w, x, b = sparse_array(rng, (n_out, n_in), ws), sparse_array(rng, (batch, n_in), 0.0), rng.standard_normal(n_out)
    b = b.astype(np.float32)
    out = linear.sparse_dense_linear(layouts.to_csr(w), x, b, transposed=transposed)
    assert_close(out, reference.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), n_in=dims, n_out=dims, ws=fractions, xs=fractions, seed=st.integers(0, 2**16),
       nchunks=st.integers(1, 3))
def test_sparse_weight_sparse_input_matches_torch(batch, n_in, n_out, ws, xs, seed, nchunks):
    rng = np.random.default_rng(seed)
    w, x = sparse_array(rng, (n_out, n_in), ws), sparse_array(rng, (batch, n_in), xs)
    aidx, aval, counts = linear.active_inputs(x)
    assert (counts == (x != 0).sum(1)).all()
    out = linear.sparse_sparse_linear(layouts.to_csc(w), aidx, aval, counts, None, nchunks=nchunks)
    assert_close(out, reference.linear(torch.from_numpy(x), torch.from_numpy(w)))


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 5), n_in=st.integers(2, 60), n_out=dims, seed=st.integers(0, 2**16))
def test_kwta_indices_drive_sparse_linear(batch, n_in, n_out, seed):
    """Winners' indices and values (as k-WTA gives them) against the reference that scatters them densely."""
    rng = np.random.default_rng(seed)
    w = sparse_array(rng, (n_out, n_in), 0.5)
    k = max(1, n_in // 4)
    aidx = np.stack([np.sort(rng.choice(n_in, k, replace=False)) for _ in range(batch)]).astype(np.int32)
    aval = rng.standard_normal((batch, k)).astype(np.float32)
    out = linear.sparse_sparse_linear(layouts.to_csc(w), aidx, aval)
    assert_close(out, reference.linear_active(torch.from_numpy(aidx), torch.from_numpy(aval), n_in,
                                              torch.from_numpy(w)))


def test_dense_active_kernel_matches_torch():
    rng = np.random.default_rng(1)
    w, x = sparse_array(rng, (13, 40), 0.0), sparse_array(rng, (3, 40), 0.8)
    aidx, aval, counts = linear.active_inputs(x)
    out = np.empty((3, 13), np.float32)
    linear.dense_active(np.ascontiguousarray(w.T), aidx, aval, counts, np.zeros(13, np.float32), out)
    assert_close(out, reference.linear(torch.from_numpy(x), torch.from_numpy(w)))


def test_compact_index_types():
    w = np.zeros((4, 70000), np.float32)
    w[0, 69999] = 1.0
    assert layouts.to_csr(w).idx.dtype == np.uint32
    assert layouts.to_csc(w).idx.dtype == np.uint16
    assert layouts.to_csr(np.eye(8, dtype=np.float32)).idx.dtype == np.uint16
    assert layouts.to_csr(np.eye(8, dtype=np.float32)).nnz == 8


def test_bad_input_raises():
    csr = layouts.to_csr(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="batch, 4"):
        linear.sparse_dense_linear(csr, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        linear.sparse_sparse_linear(layouts.to_csc(np.eye(4, dtype=np.float32)), np.array([[7]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="2-D"):
        layouts.to_csr(np.zeros(3, np.float32))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), n_in=dims, n_out=dims, ws=fractions, xs=fractions, seed=st.integers(0, 2**16),
       nparts=st.integers(1, 4), parallel=st.booleans())
def test_row_split_and_batched_sparse_sparse_kernels_match_torch(batch, n_in, n_out, ws, xs, seed, nparts, parallel):
    rng = np.random.default_rng(seed)
    w, x = sparse_array(rng, (n_out, n_in), ws), sparse_array(rng, (batch, n_in), xs)
    bias = rng.standard_normal(n_out).astype(np.float32)
    expected = reference.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias))
    csc = layouts.to_csc(w)
    split = linear.row_splits(csc, nparts)
    assert split.shape == (n_in, nparts + 1) and split.dtype == csc.ptr.dtype
    assert (split[:, 0] == csc.ptr[:-1]).all() and (split[:, -1] == csc.ptr[1:]).all()
    assert (np.diff(split, axis=1) >= 0).all()
    aidx, aval, counts = linear.active_inputs(x)
    out = np.empty((batch, n_out), np.float32)
    linear.csc_active_rows.pick(parallel)(split, csc.idx, csc.val, aidx, aval, counts, bias, out)
    assert_close(out, expected)
    xptr = np.empty(n_in + 1, np.int32)
    xs_, xv = np.empty(int(counts.sum()), np.int32), np.empty(int(counts.sum()), np.float32)
    linear.transpose_active(aidx, aval, counts, n_in, xptr, xs_, xv)
    assert xptr[-1] == (x != 0).sum()
    for i in range(n_in):                                    # grouped by input, samples ascending
        assert list(xs_[xptr[i]:xptr[i + 1]]) == list(np.flatnonzero(x[:, i]))
    out2 = np.full((batch, n_out), np.nan, np.float32)
    linear.csc_active_batched.pick(parallel)(split, csc.idx, csc.val, xptr, xs_, xv, bias, out2)
    assert_close(out2, expected)


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 9), n_in=dims, n_out=st.integers(1, 200), xs=fractions, seed=st.integers(0, 2**16),
       parallel=st.booleans())
def test_dense_active_kernel_batches_and_wide_outputs(batch, n_in, n_out, xs, seed, parallel):
    """Several 64-unit output blocks (and a partial one), every sample of a batch, serial and parallel builds."""
    rng = np.random.default_rng(seed)
    w, x = sparse_array(rng, (n_out, n_in), 0.3), sparse_array(rng, (batch, n_in), xs)
    bias = rng.standard_normal(n_out).astype(np.float32)
    aidx, aval, counts = linear.active_inputs(x)
    out = np.full((batch, n_out), np.nan, np.float32)
    linear.dense_active.pick(parallel)(np.ascontiguousarray(w.T), aidx, aval, counts, bias, out)
    assert_close(out, reference.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)))
