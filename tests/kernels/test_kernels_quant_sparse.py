"""The windows layout of sparse 4-bit codes (kernels/quant_sparse.py): every build (AVX-512, AVX2, scalar; serial and
parallel) against a float64 reference, the layout decoded back to the code matrix, its validation, and a fuzz of the
layout's arrays (a mutated layout is refused, or read safely)."""
import os

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from frugalnet.kernels import quant as q, quant_sparse as qs
from tests.kernels.kernel_testutils import assert_close

INT4 = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1], np.int8)
E2M1 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)
ISA = q.isa()
BUILDS = {"avx512": qs.window_rows_avx512, "avx2": qs.window_rows_avx2, "scalar": qs.window_rows_scalar}
EXAMPLES = int(os.environ.get("FRUGALNET_FUZZ_EXAMPLES", "60"))


def _codes(rng, n_out, n, sparsity):
    mat = rng.integers(0, 16, (n_out, n)).astype(np.uint8)
    mat[rng.random(mat.shape) < sparsity] = 0
    return mat


def _layout(mat, lut, width, blk=0):
    """(kernel arguments, scale (n_out, width / blk or 1), bias) of a code matrix."""
    ptr, idx, packed = q.compress_codes(mat, lut == 0, by_column=False, nibble=True)
    n_out = mat.shape[0]
    scale = np.random.default_rng(blk).uniform(0.1, 1.0, (n_out, width // blk if blk else 1)).astype(np.float32)
    bias = np.linspace(-1.0, 1.0, n_out).astype(np.float32)
    return qs.windows_from_csr(ptr, idx, packed, lut == 0, n_out, width, scale, blk, bias), scale, bias


def _run(build, parallel, layout, lut, x, n_out):
    out = np.full((x.shape[0], n_out), np.nan, np.float32)
    sptr, base, ent, lane_scale, lane_bias, bscale, shift = layout
    BUILDS[build].pick(parallel)(sptr, base, ent, lut.astype(np.float32), lane_scale, lane_bias, bscale, shift, x,
                                 out)
    return out


def _available(build):
    return build == "scalar" or ISA[build]


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("lut", [INT4, E2M1], ids=["int4", "e2m1"])
@pytest.mark.parametrize("sparsity", [0.9, 0.5, 0.995])
@pytest.mark.parametrize("blk", [0, 16, 32], ids=["row-scale", "blk16", "blk32"])
def test_window_builds_match_reference(build, parallel, lut, sparsity, blk):
    if not _available(build):
        pytest.skip(f"this CPU lacks {build}")
    rng = np.random.default_rng(int(sparsity * 1000))
    n_out, n, batch = 37, 150, 3             # rows not a multiple of 16; columns padded to the kernels' width
    width = q.padded_width(n)
    mat = _codes(rng, n_out, n, sparsity)
    mat[5] = 0                               # an empty row
    mat[7, :] = 0
    mat[7, [0, 149]] = 3                     # a gap wider than a window, and the last column
    layout, scale, bias = _layout(mat, lut, width, blk)
    x = np.zeros((batch, width), np.float32)
    x[:, :n] = rng.standard_normal((batch, n))
    w = lut[mat].astype(np.float32) * scale[:, np.arange(n) // blk if blk else np.zeros(n, int)]   # as simulated
    ref = x[:, :n].astype(np.float64) @ w.astype(np.float64).T + bias
    assert_close(_run(build, parallel, layout, lut, x, n_out), ref.astype(np.float32))


def test_window_layout_decodes_back_to_the_codes():
    rng = np.random.default_rng(3)
    n_out, n = 40, 300
    mat = _codes(rng, n_out, n, 0.9)
    width = q.padded_width(n)
    (sptr, base, ent, lane_scale, lane_bias, bscale, _), scale, _ = _layout(mat, INT4, width)
    assert base.dtype == np.uint16 and base.max() <= width - 16
    back = np.zeros((n_out, n), np.uint8)
    for s in range(len(sptr) - 1):
        for t in range(sptr[s], sptr[s + 1]):
            e = ent[16 * t:16 * t + 16]
            assert e.any()                           # every step takes at least one entry
            for lane in np.nonzero(e)[0]:
                row, col = 16 * s + int(lane), int(base[t]) + int(e[lane] & 15)
                assert back[row, col] == 0           # each entry once
                back[row, col] = e[lane] >> 4
    np.testing.assert_array_equal(back, np.where(INT4[mat] == 0, 0, mat))
    np.testing.assert_array_equal(lane_scale[:n_out], scale[:, 0])
    assert len(bscale) == 0
    # about 1.8 slots per nonzero at 90% sparsity with 16-column windows (2 bytes of base per 16 slots)
    nnz = int((INT4[mat] != 0).sum())
    assert len(ent) < 2.5 * nnz


def test_block_scaled_windows_stay_inside_a_block():
    rng = np.random.default_rng(4)
    mat = _codes(rng, 32, 256, 0.7)
    (sptr, base, ent, lane_scale, _, bscale, shift), scale, _ = _layout(mat, E2M1, 256, 32)
    assert shift == 5 and np.all(lane_scale == 1) and len(bscale) == 8 * 32
    np.testing.assert_array_equal(bscale.reshape(8, 32), scale.T)
    for t in range(len(base)):
        cols = int(base[t]) + (ent[16 * t:16 * t + 16][ent[16 * t:16 * t + 16] != 0] & 15).astype(int)
        assert (cols >> 5 == int(base[t]) >> 5).all()
    with pytest.raises(ValueError, match="power of two"):
        qs.windows_from_csr(*q.compress_codes(mat, E2M1 == 0, False, True), E2M1 == 0, 32, 256,
                            np.ones((32, 256 // 48), np.float32), 48, np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="block scales"):
        qs.check_windows(sptr, base, ent, 32, 256, bscale[:-32], shift)


def test_empty_matrix_and_tiny_width():
    mat = np.zeros((5, 10), np.uint8)
    (sptr, base, ent, *_), _, _ = _layout(mat, INT4, 16)
    assert sptr.tolist() == [0, 0] and len(base) == 0 and len(ent) == 0
    x = np.ones((2, 16), np.float32)
    out = np.empty((2, 5), np.float32)
    qs.window_rows_scalar(sptr, base, ent, INT4.astype(np.float32), np.ones(16, np.float32), np.zeros(16, np.float32),
                          np.zeros(0, np.float32), 0, x, out)
    np.testing.assert_array_equal(out, 0)
    with pytest.raises(ValueError, match="width of at least 16"):
        qs.to_windows(np.zeros(6, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8), INT4 == 0, 5, 8)
    with pytest.raises(ValueError, match="column indices below the width"):
        qs.to_windows(np.array([0, 1]), np.array([20]), np.array([1], np.uint8), INT4 == 0, 1, 16)


def _valid():
    rng = np.random.default_rng(5)
    mat = _codes(rng, 20, 60, 0.8)
    (sptr, base, ent, *_), _, _ = _layout(mat, INT4, 64)
    return sptr, base, ent


@pytest.mark.parametrize("edit, match", [
    (lambda s, b, e: (s.astype(np.int32), b, e), "sptr must be int64"),
    (lambda s, b, e: (s[:-1], b, e), "sptr must be int64"),
    (lambda s, b, e: (s + 1, b, e), "rise from 0"),
    (lambda s, b, e: (s[::-1].copy(), b, e), "rise from 0"),
    (lambda s, b, e: (s, b.astype(np.int64), e), "base must be"),
    (lambda s, b, e: (s, b, e[:-1]), "ent must be uint8"),
    (lambda s, b, e: (s, b, e.astype(np.int8)), "ent must be uint8"),
    (lambda s, b, e: (s, np.where(np.arange(len(b)) == 0, 49, b).astype(np.uint16), e), "at most width - 16"),
])
def test_bad_layouts_are_refused(edit, match):
    with pytest.raises(ValueError, match=match):
        qs.check_windows(*edit(*_valid()), 20, 64)


@settings(max_examples=EXAMPLES, deadline=None)
@given(array=st.sampled_from(["sptr", "base", "ent"]), where=st.floats(0, 1), value=st.integers(-2 ** 17, 2 ** 17),
       cut=st.booleans())
def test_fuzzed_layouts_are_refused_or_read_safely(array, where, value, cut):
    """One value changed (or the array cut short): check_windows raises ValueError, or every build reads the layout
    without leaving its arrays (numba does no bounds checks: a bad index here would read out of bounds)."""
    arrays = dict(zip(("sptr", "base", "ent"), (a.copy() for a in _valid())))
    a = arrays[array]
    i = min(len(a) - 1, int(where * len(a)))
    if cut:
        arrays[array] = a[:i]
    else:
        a[i] = value % (np.iinfo(a.dtype).max + 1) if a.dtype.kind == "u" else value
    try:
        qs.check_windows(arrays["sptr"], arrays["base"], arrays["ent"], 20, 64)
    except ValueError:
        return
    out = np.empty((1, 20), np.float32)
    qs.window_rows_scalar(arrays["sptr"], arrays["base"], arrays["ent"], INT4.astype(np.float32),
                          np.ones(32, np.float32), np.zeros(32, np.float32), np.zeros(0, np.float32), 0,
                          np.ones((1, 64), np.float32), out)
    assert np.isfinite(out).all()


@pytest.mark.skipif(not ISA["avx512"], reason="AVX-512 only")
def test_avx512_build_decodes_with_register_lookups():
    """The generated code takes x and the code values by 16-lane permutes (vpermps, or vpermd: LLVM picks the
    integer form) on zmm registers: no gathers."""
    from frugalnet.kernels.quant_simd import window_fma512, window_fma512s

    fresh = numba.njit(qs._window_rows_source(window_fma512, window_fma512s))   # not the disk-cached build
    sptr, base, ent = _valid()
    x = np.ones((1, 64), np.float32)
    fresh(sptr, base, ent, INT4.astype(np.float32), np.ones(32, np.float32), np.zeros(32, np.float32),
          np.zeros(0, np.float32), 0, x, np.empty((1, 20), np.float32))
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert "vpermd" in asm or "vpermps" in asm
    assert "zmm" in asm and "vgather" not in asm
