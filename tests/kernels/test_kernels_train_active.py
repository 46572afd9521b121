"""Training kernels that take k-WTA's active lists (kernels.train_active) against plain PyTorch references."""
import numpy as np
import pytest
import torch

from frugalnet.kernels import kwta as KW
from frugalnet.kernels import train as T
from frugalnet.kernels import train_active as A


def _mask(n_out, n_in, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_out, n_in, generator=g) < density
    mask[0] = False                        # an empty row
    mask[1] = True                         # a full row (nnz not a multiple of 4)
    return mask


def _lists(batch, n, k, seed, zero_some=False):
    """Per-sample lists as k-WTA makes them: k distinct ascending positions per row and their values."""
    g = np.random.default_rng(seed)
    aidx = np.sort(np.stack([g.choice(n, k, replace=False) for _ in range(batch)]), axis=1).astype(np.int32)
    aval = g.standard_normal((batch, k)).astype(np.float32)
    if zero_some:
        aval[:, ::3] = 0.0                 # winners with a zero value (or zero gradient) stay in the lists
    dense = np.zeros((batch, n), np.float32)
    np.put_along_axis(dense, aidx, aval, axis=1)
    return aidx, aval, dense


def _units(aidx, aval, n):
    counts = np.full(aidx.shape[0], aidx.shape[1], np.int32)
    ptr = np.empty(n + 1, np.int64)
    rows = np.empty(int(counts.sum()), np.int32)
    vals = np.empty(int(counts.sum()), np.float32)
    A.by_unit(aidx, aval, counts, n, ptr, rows, vals)
    return ptr, rows, vals


def test_by_unit_groups_each_units_samples_in_order():
    aidx, aval, dense = _lists(13, 40, 6, seed=1)
    ptr, rows, vals = _units(aidx, aval, 40)
    assert ptr[0] == 0 and ptr[-1] == aidx.size
    for u in range(40):
        ref_rows = np.nonzero(dense[:, u])[0]
        np.testing.assert_array_equal(rows[ptr[u]:ptr[u + 1]], ref_rows)
        np.testing.assert_array_equal(vals[ptr[u]:ptr[u + 1]], dense[ref_rows, u])


@pytest.mark.parametrize("shape", [(37, 29, 13, 3), (64, 130, 8, 20), (5, 3, 1, 1), (70, 50, 33, 9),
                                   (40, 600, 6, 2)])   # the last: few touched inputs, re-zeroed one by one
@pytest.mark.parametrize("parallel,chunks", [(False, 1), (True, 3), (True, 100)])
def test_sddmm_lists_kernels_equal_masked_dense_product(shape, parallel, chunks):
    n_out, n_in, batch, k = shape
    mask = _mask(n_out, n_in, 0.3)
    gidx, gval, gy = _lists(batch, n_out, max(1, n_out // 4), seed=2, zero_some=True)
    xidx, xval, xs = _lists(batch, n_in, k, seed=3)
    x = np.random.default_rng(4).standard_normal((batch, n_in)).astype(np.float32)
    lay = T.mask_layout(mask.numpy())
    units = _units(gidx, gval, n_out)
    m = mask.double()
    for xin, name in ((x, "dense x"), (xs, "listed x")):
        ref = ((torch.from_numpy(gy).double().t() @ torch.from_numpy(xin).double()) * m).numpy().reshape(-1)
        ref = ref[lay.csr_flat]
        vals = np.full(lay.nnz, np.nan, np.float32)     # every entry must be written
        A.sddmm_lists.pick(parallel)(lay.csr_ptr, lay.csr_idx, *units, xin, vals)
        np.testing.assert_allclose(vals, ref, rtol=1e-5, atol=1e-5, err_msg=name)
    counts = np.full(batch, k, np.int32)
    vals = np.full(lay.nnz, np.nan, np.float32)
    A.sddmm_lists_both.pick(parallel)(lay.csr_ptr, lay.csr_idx, *units, xidx, xval, counts, n_in, vals, chunks)
    np.testing.assert_allclose(vals, ref, rtol=1e-5, atol=1e-5)
    # the same sums in the same order as the gy-skipping kernel that reads gy transposed: bitwise equal
    same = np.empty(lay.nnz, np.float32)
    T.sddmm_sparse_gy.serial(lay.csr_ptr, lay.csr_idx, np.ascontiguousarray(gy.T), xs, same)
    np.testing.assert_array_equal(vals, same)


@pytest.mark.parametrize("shape", [(37, 29, 13), (64, 130, 8), (5, 3, 1), (33, 16, 70)])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_csr_rows_tt_equals_masked_dense_linear(shape, parallel, bias):
    n_out, n_in, batch = shape
    mask = _mask(n_out, n_in, 0.3, seed=5)
    g = torch.Generator().manual_seed(6)
    w = torch.randn(n_out, n_in, generator=g) * mask
    x = torch.randn(batch, n_in, generator=g)
    b = torch.randn(n_out, generator=g) if bias else torch.zeros(n_out)
    lay = T.mask_layout(mask.numpy())
    vals = w.numpy().reshape(-1)[lay.csr_flat]
    out = np.full((batch, n_out), np.nan, np.float32)
    A.csr_rows_tt.pick(parallel)(lay.csr_ptr, lay.csr_idx, vals, np.ascontiguousarray(x.numpy().T), b.numpy(), out)
    ref = torch.nn.functional.linear(x.double(), w.double(), b.double()).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("parallel,chunks", [(False, 1), (True, 2), (True, 7)])
def test_kwta_rows_train_gives_the_inference_kernels_winners_and_their_values(parallel, chunks):
    g = np.random.default_rng(7)
    x = g.standard_normal((9, 1500)).astype(np.float32)
    x[3] = np.round(x[3])                   # ties at the k-th place
    boost = np.exp(0.3 * g.standard_normal(1500)).astype(np.float32)
    k = 75
    aidx, aval = np.empty((9, k), np.int32), np.empty((9, k), np.float32)
    KW.kwta_rows.serial(x, boost, k, aidx, aval, 1)          # the inference kernel's winners
    out = np.zeros_like(x)
    np.put_along_axis(out, aidx, aval, axis=1)
    aidx2, aval2, out2 = np.empty((9, k), np.int32), np.empty((9, k), np.float32), np.full_like(x, np.nan)
    KW.kwta_rows_train.pick(parallel)(x, boost, k, aidx2, aval2, out2, chunks)
    np.testing.assert_array_equal(aidx2, aidx)
    np.testing.assert_array_equal(out2, out)
    np.testing.assert_array_equal(aval2, np.take_along_axis(x, aidx, axis=1))
    gy = g.standard_normal(x.shape).astype(np.float32)
    gx, gval = np.full_like(x, np.nan), np.empty((9, k), np.float32)
    KW.winners_grad_lists.pick(parallel)(gy, aidx, gx, gval)
    ref = np.zeros_like(x)
    np.put_along_axis(ref, aidx, np.take_along_axis(gy, aidx, axis=1), axis=1)
    np.testing.assert_array_equal(gx, ref)
    np.testing.assert_array_equal(gval, np.take_along_axis(gy, aidx, axis=1))
    wins, wins_ref = np.zeros(1500), np.zeros(1500)
    KW.count_positive_values(aidx, aval2, 1, wins)
    for b in range(9):                      # each winner whose output is > 0 counts once
        np.add.at(wins_ref, aidx[b][out[b, aidx[b]] > 0], 1.0)
    np.testing.assert_array_equal(wins, wins_ref)


@pytest.mark.parametrize("shape", [(37, 29, 13, 3), (64, 130, 8, 20), (5, 3, 1, 1), (70, 50, 33, 9)])
@pytest.mark.parametrize("parallel,block", [(False, 1), (False, 64), (True, 5), (True, 64)])
def test_csc_lists_blocked_equals_linear_and_the_per_sample_kernel(shape, parallel, block):
    from frugalnet.kernels import linear as L

    n_out, n_in, batch, k = shape
    mask = _mask(n_out, n_in, 0.3, seed=8)
    g = torch.Generator().manual_seed(9)
    w = torch.randn(n_out, n_in, generator=g) * mask
    b = torch.randn(n_out, generator=g)
    aidx, aval, xs = _lists(batch, n_in, k, seed=10, zero_some=True)
    counts = np.full(batch, k, np.int32)
    lay = T.mask_layout(mask.numpy())
    csc = w.numpy().reshape(-1)[lay.csc_flat]
    out = np.full((batch, n_out), np.nan, np.float32)
    A.csc_lists_blocked.pick(parallel)(lay.csc_ptr, lay.csc_idx, csc, aidx, aval, counts, b.numpy(), out, block)
    ref = torch.nn.functional.linear(torch.from_numpy(xs).double(), w.double(), b.double()).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    per_sample = np.empty_like(out)
    L.csc_active_rows.serial(lay.csc_split, lay.csc_idx, csc, aidx, aval, counts, b.numpy(), per_sample)
    np.testing.assert_array_equal(out, per_sample)      # the same terms in the same order


def test_unit_sums_equal_column_sums_of_the_dense_array():
    aidx, aval, dense = _lists(21, 50, 7, seed=12, zero_some=True)
    ptr, rows, vals = _units(aidx, aval, 50)
    out, ref = np.full(50, np.nan, np.float32), np.empty(50, np.float32)
    A.unit_sums(ptr, vals, out)
    T.column_sums.serial(dense, ref)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_allclose(out, dense.astype(np.float64).sum(0), rtol=1e-5, atol=1e-6)
