"""Conv2d kernels for sparse (k-WTA) input, NCHW out: the active inputs of each sample, (index, value) pairs flat
over (C, H, W), are all the input they read.

* `conv_active_dense_taps`: output-stationary: the active inputs are bucketed by position, then each output pixel
  sums the weight rows of the actives under its receptive field in registers, and an optional max pool is taken
  before the sums leave them.
* `conv_active_sparse_taps`: per-tap compressed weights: each active input scatters value x its tap's nonzero
  weights into the outputs it reaches.
Groups are handled by the caller expanding the weight to its block-diagonal (Cout, Cin, kh, kw) form.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.simd import axpy_segments, vload, vmax_nan, vstore

@njit(**JIT)
def unflatten_chw(f, hw, in_w):
    """(channel, row, column) of flat index f over a (C, H, W) sample, hw = H * W."""
    ci = f // hw
    rem = f - ci * hw
    iy = rem // in_w
    return ci, iy, rem - iy * in_w


@njit(**JIT)
def tap_output(i, pad, k, dil, stride, size):
    """The output coordinate that input coordinate i reaches through kernel offset k (padding, dilation, stride),
    or -1 when it reaches none: the one geometry rule of every sparse-input (scatter) convolution."""
    n = i + pad - k * dil
    if n < 0 or n % stride != 0:
        return -1
    o = n // stride
    return o if o < size else -1


@njit(**JIT)
def bucket_by_position(ai, av, n, in_h, in_w, chan_stride, col_stride, pos_ptr, code, val):
    """Counting sort of one sample's active inputs (flat (C, H, W) indices ai, values av, n of them) by spatial
    position: the actives at position p are code / val[pos_ptr[p]:pos_ptr[p + 1]], channels ascending, with
    code = channel x chan_stride + column x col_stride. Indices in ascending order (as k-WTA and `nonzeros` give
    them) find their channel without a division; any other order is still handled."""
    hw = in_h * in_w
    for p in range(hw + 1):
        pos_ptr[p] = 0
    col_code = np.empty(hw, np.int64)    # position -> column x col_stride (no division per active)
    for iy in range(in_h):
        for ix in range(in_w):
            col_code[iy * in_w + ix] = ix * col_stride
    ci = 0
    for t in range(n):
        f = ai[t]
        if f < ci * hw or f >= (ci + 1) * hw:
            ci = f // hw
        pos_ptr[f - ci * hw + 1] += 1
    for p in range(hw):
        pos_ptr[p + 1] += pos_ptr[p]
    ci = 0
    for t in range(n):
        f = ai[t]
        if f < ci * hw or f >= (ci + 1) * hw:
            ci = f // hw
        p = f - ci * hw
        j = pos_ptr[p]
        code[j] = ci * chan_stride + col_code[p]
        val[j] = av[t]
        pos_ptr[p] = j + 1
    for p in range(hw, 0, -1):
        pos_ptr[p] = pos_ptr[p - 1]
    pos_ptr[0] = 0


@njit(**JIT)
def _pool_into(acc, first, res):
    """res = acc (first window position) or max(res, acc), NaN propagating as in torch's max pooling; acc and res
    contiguous. Eight channels at a time in vector registers (a scalar loop with the NaN test did not vectorise:
    it was half of conv1's time in CNN-2), the rest as scalars."""
    n = acc.shape[0]
    c = 0
    if first:
        while c + 8 <= n:
            vstore(res, c, vload(acc, c))
            c += 8
        for co in range(c, n):
            res[co] = acc[co]
        return
    while c + 8 <= n:
        vstore(res, c, vmax_nan(vload(acc, c), vload(res, c)))
        c += 8
    for co in range(c, n):
        a = acc[co]
        r = res[co]
        res[co] = a if (a > r or a != a) else r


@njit(**JIT)
def _conv_pixels_output_stationary(q_lo, q_hi, pool, pos_ptr, code, val, in_h, in_w, wflat, kh, kw, bias, sh, sw,
                                   ph, pw, dh, dw, out, seg_lo, seg_hi, seg_base, acc, res):
    """Output pixels q_lo..q_hi (row-major) of one sample, out (Cout, OH', OW'), after a pool x pool max pool when
    pool > 1; output-stationary: for each conv output position, the active inputs under its receptive field,
    summed as value x weight row over all Cout at once with the partial sums in registers (simd.axpy_segments).
    The weight row of an active (channel ci, column ix) under tap (ky, kx) is
    code + (ky * kw + kx - ix) * Cout; with dilation 1 the kw taps of a kernel row are consecutive input
    positions, so one segment (a contiguous run of the bucketed actives) covers the whole kernel row."""
    cout, pw_out = out.shape[0], out.shape[2]
    for q in range(q_lo, q_hi):
        py = q // pw_out
        px = q - py * pw_out
        for dy in range(pool):
            for dx in range(pool):
                oy = py * pool + dy
                ox = px * pool + dx
                ns = 0
                x0 = ox * sw - pw
                for ky in range(kh):
                    iy = oy * sh - ph + ky * dh
                    if iy < 0 or iy >= in_h:
                        continue
                    row = iy * in_w
                    if dw == 1:
                        lo_x = max(0, x0)
                        hi_x = min(in_w, x0 + kw)
                        if lo_x < hi_x:
                            seg_lo[ns] = pos_ptr[row + lo_x]
                            seg_hi[ns] = pos_ptr[row + hi_x]
                            seg_base[ns] = (ky * kw - x0) * cout
                            ns += 1
                        continue
                    for kx in range(kw):
                        ix = x0 + kx * dw
                        if ix < 0 or ix >= in_w:
                            continue
                        seg_lo[ns] = pos_ptr[row + ix]
                        seg_hi[ns] = pos_ptr[row + ix + 1]
                        seg_base[ns] = (ky * kw + kx - ix) * cout
                        ns += 1
                for co in range(cout):
                    acc[co] = bias[co]
                axpy_segments(wflat, seg_lo, seg_hi, seg_base, ns, code, val, acc, 0, cout)
                _pool_into(acc, dy == 0 and dx == 0, res)
        for co in range(cout):
            out[co, py, px] = res[co]


@njit(**JIT)
def _private(n):
    """A float32 scratch vector of n for one thread, padded by a cache line on each side: small per-thread
    allocations sit next to each other on the heap, and two threads writing the two ends of one cache line
    (sums rewritten at every output pixel) would pass it back and forth between the cores."""
    return np.empty(n + 32, np.float32)[16:16 + n]


@kernel
def conv_active_dense_taps(aidx, aval, counts, in_h, in_w, wt, bias, sh, sw, ph, pw, dh, dw, out, nchunks, pool):
    """Sparse-input conv with per-tap dense weight vectors wt (Cin, kh, kw, Cout), then (pool > 1) a pool x pool
    max pool; out (B, Cout, OH', OW'). Output-stationary (see _conv_pixels_output_stationary); work split over
    (sample, run of output pixels), nchunks even runs per sample (runs of whole rows were uneven: CNN-2's 5
    pooled rows went 3 + 2)."""
    batch, k = aidx.shape
    kh, kw, cout = wt.shape[1], wt.shape[2], wt.shape[3]
    npix = out.shape[2] * out.shape[3]
    wflat = wt.reshape(-1)
    for p in prange(batch * nchunks):     # one parallel loop (each run buckets its sample itself: one parfor to JIT)
        b = p // nchunks
        c = p % nchunks
        pos_ptr = np.empty(in_h * in_w + 1, np.int32)
        code = np.empty(k, np.int64)
        val = np.empty(k, np.float32)
        bucket_by_position(aidx[b], aval[b], counts[b], in_h, in_w, kh * kw * cout, cout, pos_ptr, code, val)
        seg_lo = np.empty(kh * kw, np.int32)
        seg_hi = np.empty(kh * kw, np.int32)
        seg_base = np.empty(kh * kw, np.int32)
        acc = _private(cout)
        res = _private(cout)
        _conv_pixels_output_stationary((c * npix) // nchunks, ((c + 1) * npix) // nchunks, pool, pos_ptr, code,
                                       val, in_h, in_w, wflat, kh, kw, bias, sh, sw, ph, pw, dh, dw, out[b], seg_lo,
                                       seg_hi, seg_base, acc, res)




@kernel
def conv_active_sparse_taps(aidx, aval, counts, in_h, in_w, kh, kw, ptr, idx, val, bias, sh, sw, ph, pw, dh, dw,
                            out, nchunks):
    """Sparse-input conv with per-tap compressed weights (CSC over (Cout, Cin*kh*kw)); out (B, Cout, OH, OW)."""
    batch = aidx.shape[0]
    cout, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    hw = in_h * in_w
    part = np.zeros((batch * nchunks, oh, ow, cout), dtype=np.float32)
    for p in prange(batch * nchunks):
        b = p // nchunks
        c = p % nchunks
        n = counts[b]
        step = (n + nchunks - 1) // nchunks
        acc = part[p]
        for t in range(c * step, min(n, (c + 1) * step)):
            v = aval[b, t]
            ci, iy, ix = unflatten_chw(aidx[b, t], hw, in_w)
            for ky in range(kh):
                oy = tap_output(iy, ph, ky, dh, sh, oh)
                if oy < 0:
                    continue
                for kx in range(kw):
                    ox = tap_output(ix, pw, kx, dw, sw, ow)
                    if ox < 0:
                        continue
                    tap = (ci * kh + ky) * kw + kx
                    a = acc[oy, ox]
                    for j in range(ptr[tap], ptr[tap + 1]):
                        a[idx[j]] += v * val[j]
    _gather_parts(part, bias, nchunks, out)


@njit(**JIT)
def _gather_parts(part, bias, nchunks, out):
    """out[b, co, oy, ox] = bias[co] + sum of the nchunks partial (OH, OW, Cout) maps of sample b."""
    batch, cout, oh, ow = out.shape
    for b in range(batch):
        for co in range(cout):
            for oy in range(oh):
                for ox in range(ow):
                    s = bias[co]
                    for c in range(nchunks):
                        s += part[b * nchunks + c, oy, ox, co]
                    out[b, co, oy, ox] = s
