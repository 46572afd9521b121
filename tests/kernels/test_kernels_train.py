"""Training kernels (kernels.train) against plain PyTorch references."""
import numpy as np
import pytest
import torch

from frugalnet.kernels import train as T
from frugalnet.kernels.layouts import to_csc, to_csr


def _case(n_out, n_in, batch, density, gy_density, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n_out, n_in, generator=g) < density
    mask[0] = False                       # an empty row
    mask[1] = True                        # a full row (nnz not a multiple of 4)
    gy = torch.randn(batch, n_out, generator=g) * (torch.rand(batch, n_out, generator=g) < gy_density)
    x = torch.randn(batch, n_in, generator=g)
    return mask, gy, x


@pytest.mark.parametrize("shape", [(37, 29, 13), (64, 130, 8), (5, 3, 1)])
@pytest.mark.parametrize("gy_density", [1.0, 0.1])
@pytest.mark.parametrize("parallel", [False, True])
def test_sddmm_kernels_equal_masked_dense_product(shape, gy_density, parallel):
    n_out, n_in, batch = shape
    mask, gy, x = _case(n_out, n_in, batch, 0.3, gy_density)
    ref = (gy.double().t() @ x.double()) * mask
    lay = T.mask_layout(mask.numpy())
    gyt, xt = np.ascontiguousarray(gy.numpy().T), np.ascontiguousarray(x.numpy().T)
    ref_vals = ref.numpy().reshape(-1)[lay.csr_flat]
    vals = np.full(lay.nnz, np.nan, np.float32)      # every entry must be written
    T.sddmm_dense.pick(parallel)(lay.csr_ptr, lay.csr_idx, gyt, xt, vals)
    np.testing.assert_allclose(vals, ref_vals, rtol=1e-5, atol=1e-5)
    vals2 = np.full(lay.nnz, np.nan, np.float32)
    T.sddmm_sparse_gy.pick(parallel)(lay.csr_ptr, lay.csr_idx, gyt, x.numpy(), vals2)
    np.testing.assert_allclose(vals2, ref_vals, rtol=1e-5, atol=1e-5)
    gw = np.full((n_out, n_in), np.nan, np.float32)
    T.expand_rows.pick(parallel)(lay.csr_ptr, lay.csr_idx, vals, gw)
    np.testing.assert_allclose(gw, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert (gw[~mask.numpy()] == 0).all()


def test_masked_weight_grad_convenience_and_bad_shapes():
    mask, gy, x = _case(20, 30, 9, 0.2, 0.5)
    lay = T.mask_layout(mask.numpy())
    ref = ((gy.t() @ x) * mask).numpy()
    for skip in (False, True):
        np.testing.assert_allclose(T.masked_weight_grad(lay, gy.numpy(), x.numpy(), skip), ref, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(T.masked_weight_grad(lay, gy.numpy(), x.numpy(), skip, compact=True),
                                   ref.reshape(-1)[lay.csr_flat], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="gy must be"):
        T.masked_weight_grad(lay, gy.numpy()[:, :5], x.numpy())
    with pytest.raises(ValueError, match="mask must be 2-D"):
        T.mask_layout(np.ones(5, bool))


def test_mask_layout_matches_csr_csc_of_the_masked_weight():
    mask, _, _ = _case(40, 70, 1, 0.15, 1.0, seed=3)
    w = torch.randn(40, 70) * mask   # nonzero exactly at the mask (randn draws no exact zeros)
    lay = T.mask_layout(mask.numpy())
    csr, csc = to_csr(w), to_csc(w)
    np.testing.assert_array_equal(lay.csr_ptr, csr.ptr)
    np.testing.assert_array_equal(lay.csr_idx, csr.idx)
    np.testing.assert_array_equal(lay.csc_ptr, csc.ptr)
    np.testing.assert_array_equal(lay.csc_idx, csc.idx)
    flat = w.numpy().reshape(-1)
    vals = np.empty(lay.nnz, np.float32)
    T.gather.serial(flat, lay.csr_flat, vals)
    np.testing.assert_array_equal(vals, csr.val)
    cvals = np.empty(lay.nnz, np.float32)
    T.gather(vals, lay.csc_from_csr, cvals)
    np.testing.assert_array_equal(cvals, csc.val)
    np.testing.assert_array_equal(flat[lay.csc_flat], csc.val)
    np.testing.assert_array_equal(lay.csr_split[:, 1] - lay.csr_split[:, 0], np.diff(lay.csr_ptr))


@pytest.mark.parametrize("parallel", [False, True])
def test_zero_outside_equals_mask_multiply(parallel):
    mask, _, _ = _case(33, 47, 1, 0.2, 1.0, seed=5)
    w = torch.randn(33, 47)
    ref = w * mask
    lay = T.mask_layout(mask.numpy())
    wn = w.numpy().copy()
    T.zero_outside.pick(parallel)(wn, lay.csr_ptr, lay.csr_idx)
    np.testing.assert_array_equal(wn, ref.numpy())



@pytest.mark.parametrize("shape", [(37, 29, 13), (64, 130, 8), (5, 3, 1)])
@pytest.mark.parametrize("x_density,gy_density", [(1.0, 1.0), (0.1, 0.05), (0.05, 1.0)])
@pytest.mark.parametrize("parallel,chunks", [(False, 1), (True, 3), (True, 100)])
def test_sddmm_sparse_both_equals_masked_dense_product(shape, x_density, gy_density, parallel, chunks):
    from frugalnet.kernels import linear as K

    n_out, n_in, batch = shape
    mask, gy, _ = _case(n_out, n_in, batch, 0.3, gy_density)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(batch, n_in, generator=g) * (torch.rand(batch, n_in, generator=g) < x_density)
    lay = T.mask_layout(mask.numpy())
    ref = ((gy.double().t() @ x.double()) * mask).numpy().reshape(-1)[lay.csr_flat]
    xn = x.numpy()
    aidx, aval, counts = np.empty(xn.shape, np.int32), np.empty(xn.shape, np.float32), np.empty(batch, np.int32)
    K.nonzeros(xn, aidx, aval, counts)
    vals = np.full(lay.nnz, np.nan, np.float32)      # every entry must be written
    T.sddmm_sparse_both.pick(parallel)(lay.csr_ptr, lay.csr_idx, np.ascontiguousarray(gy.numpy().T), aidx, aval,
                                       counts, vals, chunks)
    np.testing.assert_allclose(vals, ref, rtol=1e-5, atol=1e-5)
