import numpy as np
from hypothesis import given, settings, strategies as st
from numba import njit

from frugalnet.kernels.simd import axpy_segments, vload, vmax_nan, vstore


@settings(max_examples=40, deadline=None)
@given(ncols=st.integers(1, 150), col0=st.integers(0, 9), nseg=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_axpy_segments_matches_numpy(ncols, col0, nseg, seed):
    """Every column-block width (64, 8 lanes and the scalar tail) and segment layout against float64 numpy."""
    rng = np.random.default_rng(seed)
    nrows, width = 30, ncols + col0 + 3
    w = rng.standard_normal(nrows * width).astype(np.float32)
    n = 40
    rows = rng.integers(0, nrows, n)
    offs = (rows * width).astype(np.int64)
    vals = rng.standard_normal(n).astype(np.float32)
    bounds = np.sort(rng.integers(0, n + 1, 2 * nseg)).reshape(nseg, 2) if nseg else np.zeros((0, 2), np.int64)
    shift = rng.integers(0, 3, nseg)              # per-segment base offset (in columns)
    seg_lo = bounds[:, 0].astype(np.int32)
    seg_hi = bounds[:, 1].astype(np.int32)
    seg_base = shift.astype(np.int32)
    out = rng.standard_normal(width).astype(np.float32)
    expect = out.astype(np.float64)
    for s in range(nseg):
        for j in range(seg_lo[s], seg_hi[s]):
            start = offs[j] + seg_base[s] + col0
            expect[col0:col0 + ncols] += vals[j] * w[start:start + ncols].astype(np.float64)
    axpy_segments(w, seg_lo, seg_hi, seg_base, nseg, offs, vals, out, col0, ncols)
    np.testing.assert_allclose(out, expect, rtol=1e-4, atol=1e-4)


@njit(cache=False)
def _vmax_nan_arrays(new, cur, out):
    vstore(out, 0, vmax_nan(vload(new, 0), vload(cur, 0)))


def test_vmax_nan_keeps_earlier_ties_and_propagates_nan_like_torch_pooling():
    """Lanewise `new if new > cur or new is NaN else cur`: NaN wins from either side, -0.0 vs +0.0 keeps cur."""
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    new = np.array([1, 2, nan, 3, 0.0, -0.0, inf, -inf], np.float32)
    cur = np.array([2, 1, 5, nan, -0.0, 0.0, nan, -5], np.float32)
    out = np.empty(8, np.float32)
    _vmax_nan_arrays(new, cur, out)
    expect = [new[i] if (new[i] > cur[i] or np.isnan(new[i])) else cur[i] for i in range(8)]
    assert np.array_equal(out, np.array(expect, np.float32), equal_nan=True)
    assert np.array_equal(np.signbit(out), np.signbit(np.array(expect, np.float32)))   # ties keep cur's zero
    assert np.isnan(out[2]) and np.isnan(out[3]) and np.isnan(out[6])
