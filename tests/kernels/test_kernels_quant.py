"""Packed low-bit kernels against plain numpy/PyTorch references: dense 4-bit (tensor and block scales), 8-bit,
batched, sparse x dense and sparse x sparse; layouts round-trip; the ISA report."""
import numpy as np
import pytest
import torch

from frugalnet.kernels import linear as linear_k, quant as q
from frugalnet.kernels.layouts import Compressed
from tests.kernels.kernel_testutils import assert_close

INT4 = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1], np.int8)
E2M1 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)


def _reference(mat, lut, scale, blk, x, bias):
    """y = x W^T + b with W[o, i] = lut[code] * scale[o, i // blk] (blk 0: scale[o, 0]), in float64 torch."""
    w = lut[mat].astype(np.float64)
    cols = np.arange(mat.shape[1]) // blk if blk else np.zeros(mat.shape[1], int)
    w = w * scale[:, cols]
    return torch.nn.functional.linear(torch.from_numpy(x).double(), torch.from_numpy(w),
                                      torch.from_numpy(bias).double())


def _scales(rng, n_out, k, blk):
    return rng.uniform(0.01, 1.0, (n_out, k // blk)).astype(np.float32)


@pytest.mark.parametrize("blk", [16, 32, 0])
@pytest.mark.parametrize("lut", [INT4, E2M1], ids=["int4", "e2m1"])
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("wide", [False, True], ids=["pshufb", "vpermps"])
def test_gemv_nib_matches_reference(blk, lut, parallel, wide):
    if wide and not q.isa()["avx512"]:
        pytest.skip("gemv_nib512 needs AVX-512")
    rng = np.random.default_rng(blk)
    n_out, n = 37, 150
    k = q.padded_width(n)
    mat = rng.integers(0, 16, (n_out, n)).astype(np.uint8)
    step = blk or k // 2
    scale = _scales(rng, n_out, k, step)
    x = rng.standard_normal((3, n)).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    xp = np.zeros((3, k), np.float32)
    xp[:, :n] = x
    out = np.empty((3, n_out), np.float32)
    kern, table = (q.gemv_nib512, lut.astype(np.float32)) if wide else (q.gemv_nib, lut)
    kern.pick(parallel)(q.to_halves(mat, k), table, scale, step, xp, bias, out)
    assert_close(out, _reference(mat, lut, scale[:, :], step, x, bias).float())


def test_gemm_nib_and_gemv_i8_match_reference():
    rng = np.random.default_rng(1)
    n_out, n, batch = 20, 100, 70
    k = q.padded_width(n)
    mat = rng.integers(0, 16, (n_out, n)).astype(np.uint8)
    scale = _scales(rng, n_out, k, 32)
    x = rng.standard_normal((batch, n)).astype(np.float32)
    xp = np.zeros((batch, k), np.float32)
    xp[:, :n] = x
    bias = rng.standard_normal(n_out).astype(np.float32)
    out_t = np.empty((n_out, batch), np.float32)
    q.gemm_nib(q.to_halves(mat, k), E2M1, scale, 32, np.ascontiguousarray(xp.T),
               np.arange(k, dtype=np.int64) * batch, bias, out_t)
    assert_close(out_t.T, _reference(mat, E2M1, scale, 32, x, bias).float())
    c8 = rng.integers(-127, 128, (n_out, k)).astype(np.int8)
    c8[:, n:] = 0
    scale8 = _scales(rng, n_out, k, k)
    out = np.empty((batch, n_out), np.float32)
    q.gemv_i8(c8, scale8, k, xp, bias, out)
    ref = x.astype(np.float64) @ (c8[:, :n].astype(np.float64) * scale8[:, :1]).T + bias
    assert_close(out, ref.astype(np.float32))


@pytest.mark.parametrize("nibble, blk", [(True, 0), (True, 32), (False, 0)])
def test_sparse_kernels_match_reference(nibble, blk):
    rng = np.random.default_rng(2)
    n_out, n, batch = 50, 96, 4
    if nibble:
        mat = rng.integers(0, 16, (n_out, n)).astype(np.uint8)
        mat[rng.random(mat.shape) < 0.85] = 0
        lut, zero = INT4, INT4 == 0
        values = INT4[mat].astype(np.float64)
    else:
        mat = rng.integers(-127, 128, (n_out, n)).astype(np.int8)
        mat[rng.random(mat.shape) < 0.85] = 0
        lut, zero = INT4, np.arange(256) == 0
        values = mat.astype(np.float64)
    scale = _scales(rng, n_out, n if not blk else 128, blk or n)
    cols = np.arange(n) // blk if blk else np.zeros(n, int)
    w = values * scale[:, cols]
    x = rng.standard_normal((batch, n)).astype(np.float32)
    x[rng.random(x.shape) < 0.8] = 0
    bias = rng.standard_normal(n_out).astype(np.float32)
    ref = (x.astype(np.float64) @ w.T + bias).astype(np.float32)
    shift = (blk or 1).bit_length() - 1
    store = mat.view(np.uint8)
    ptr, idx, vals = q.compress_codes(store, zero, by_column=False, nibble=nibble)
    assert (np.diff(ptr) % 2 == 0).all()       # rows start on a byte
    out = np.empty((batch, n_out), np.float32)
    q.csr_nib(ptr, idx, vals, lut.astype(np.float32), nibble, scale, shift, x, bias, out)
    assert_close(out, ref)
    cptr, cidx, cvals = q.compress_codes(store, zero, by_column=True, nibble=nibble)
    for nparts in (1, 3):
        split = linear_k.row_splits(Compressed(cptr, cidx, cvals, (n_out, n)), nparts)
        aidx, aval, counts = linear_k.active_inputs(x)
        out = np.empty((batch, n_out), np.float32)
        q.csc_nib.pick(nparts > 1)(split, cidx, cvals, lut.astype(np.float32), nibble, np.ascontiguousarray(scale.T),
                                   shift, aidx, aval,
                                   counts, bias, out)
        assert_close(out, ref)


def test_layouts_round_trip():
    rng = np.random.default_rng(3)
    mat = rng.integers(0, 16, (5, 70)).astype(np.uint8)
    k = q.padded_width(70)
    assert k == 128
    assert np.array_equal(q.from_halves(q.to_halves(mat, k), 70), mat)
    with pytest.raises(ValueError, match="cannot lay"):
        q.to_halves(mat, 64)


def test_isa_reports_the_host():
    info = q.isa()
    assert set(info) == {"cpu", "avx2", "fma", "avx512", "vnni", "amx"}
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert all(isinstance(v, bool) for k, v in info.items() if k != "cpu")


@pytest.mark.parametrize("which", ["avx2", "vnni"])
@pytest.mark.parametrize("lut", [INT4, E2M1], ids=["int4", "e2m1"])
def test_integer_dot_products_are_exact(which, lut):
    """igemv: 4-bit weight codes x unsigned 8-bit activation codes (shifted by an offset) in int32, exactly."""
    if not q.isa()[which]:
        pytest.skip(f"this CPU has no {which.upper()}")
    rng = np.random.default_rng(4)
    n_out, n, batch = 33, 200, 3
    k = q.padded_width(n)
    mat = rng.integers(0, 16, (n_out, n)).astype(np.uint8)
    codes = np.zeros((batch, k), np.uint8)
    codes[:, :n] = rng.integers(0, 256, (batch, n))
    offset = np.array([0, 8, 127], np.int32)
    scale = rng.uniform(0.5, 2.0, batch).astype(np.float32)
    bias = rng.standard_normal(n_out).astype(np.float32)
    w = lut[mat].astype(np.int64)
    rowsum = w.sum(1).astype(np.int32)
    exact = codes[:, :n].astype(np.int64) @ w.T - offset[:, None].astype(np.int64) * rowsum[None, :]
    out = np.empty((batch, n_out), np.float32)
    kern = q.igemv_vnni if which == "vnni" else q.igemv_avx2
    for parallel in (False, True):
        kern.pick(parallel)(q.to_halves(mat, k), lut, rowsum, codes, offset, scale, bias, out)
        expected = (exact.astype(np.float32) * scale[:, None]).astype(np.float32) + bias
        np.testing.assert_array_equal(out, expected)


def test_csc_padding_never_overwrites_a_real_entry():
    """A column with an odd count is padded with (row 0, code 0); row 0 may hold a real entry of that column."""
    mat = np.zeros((9, 3), np.uint8)
    mat[[0, 2, 3, 5, 8], 0] = [1, 2, 3, 4, 5]          # five entries, row 0 among them: padded to six
    mat[[0, 1, 2, 4, 6, 7, 8], 1] = 7
    ptr, idx, vals = q.compress_codes(mat, INT4 == 0, by_column=True, nibble=True)
    x = np.array([[1.5, -2.0, 0.0]], np.float32)
    aidx, aval, counts = linear_k.active_inputs(x)
    out = np.empty((1, 9), np.float32)
    split = linear_k.row_splits(Compressed(ptr, idx, vals, (9, 3)), 1)
    q.csc_nib.serial(split, idx, vals, INT4.astype(np.float32), True, np.ones((1, 9), np.float32), 0, aidx, aval,
                     counts, np.zeros(9, np.float32), out)
    np.testing.assert_allclose(out[0], INT4[mat].astype(np.float32) @ x[0])


def test_padding_entries_keep_each_column_sorted():
    """A column's padding entry repeats its last row, so row_splits keeps it in that row's part: with row 0 it fell
    in part 0's rows and the last part's thread raced part 0's on out[b, 0] (a lost sum, seen under load)."""
    rng = np.random.default_rng(0)
    mat = rng.integers(0, 16, size=(64, 40)).astype(np.uint8)
    mat[rng.random(mat.shape) < 0.85] = 0
    zero = np.zeros(16, bool)
    zero[0] = True
    for by_column in (True, False):
        ptr, idx, _ = q.compress_codes(mat, zero, by_column=by_column, nibble=True)
        for j in range(len(ptr) - 1):
            seg = idx[ptr[j]:ptr[j + 1]].astype(np.int64)
            assert np.all(np.diff(seg) >= 0), (by_column, j, seg)
