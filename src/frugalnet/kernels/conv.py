"""Direct (im2col-free) Conv2d kernels for sparse weights, with dense input or sparse (k-WTA) input. NCHW in/out.

* `conv_dense_input`: for each output channel, loop over its nonzero taps only; each tap adds a shifted input row,
  scaled by the weight, to an output row (contiguous, vectorised when stride is 1). Input must be padded already.
* `conv_direct_dense`: dense weights and dense input, output-stationary: two output pixels' sums over 32 output
  channels held in registers across all taps, and with a max pool the window's running max too; for layers with
  few input channels (a first layer), where a GEMM's im2col copy and call overhead outweigh the arithmetic.
* `conv_active_dense_taps`: sparse (k-WTA) input, output-stationary: the active inputs are bucketed by position,
  then each output pixel sums the weight rows of the actives under its receptive field in registers, and an
  optional max pool is taken before the sums leave them.
* `conv_active_sparse_taps`: sparse input and per-tap compressed weights: each active input scatters value x its
  tap's nonzero weights into the outputs it reaches.
Groups are handled by the caller expanding the weight to its block-diagonal (Cout, Cin, kh, kw) form: the zeros
cost nothing in the sparse-tap layouts.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.simd import axpy_segments, vfma, vload, vmax_nan, vstore


@kernel
def conv_dense_input(xp, ptr, taps, val, bias, sh, sw, dh, dw, out):
    """Sparse-weight conv of padded xp (B, Cin, Hp, Wp) into out (B, Cout, OH, OW); parallel over (sample, Cout)."""
    batch = xp.shape[0]
    cout, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    for p in prange(batch * cout):
        b = p // cout
        co = p % cout
        o = out[b, co]
        for oy in range(oh):
            for ox in range(ow):
                o[oy, ox] = bias[co]
        for t in range(ptr[co], ptr[co + 1]):
            ci = taps[t, 0]
            y0 = taps[t, 1] * dh
            x0 = taps[t, 2] * dw
            w = val[t]
            plane = xp[b, ci]
            for oy in range(oh):
                src = plane[y0 + oy * sh]
                dst = o[oy]
                if sw == 1:
                    for ox in range(ow):
                        dst[ox] += w * src[x0 + ox]
                else:
                    for ox in range(ow):
                        dst[ox] += w * src[x0 + ox * sw]


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
    summed as value x weight row over all Cout at once with the partial sums in registers (simd.axpy_segments). The weight row of an active (channel ci, column ix) under tap (ky, kx) is
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


@njit(**JIT)
def _pixel_pair(row0, px, dx, pool, ow, sw):
    """Offsets of the two conv pixels _conv_row_direct sums together in the input row starting at row0: without a
    pool (pool 1) output pixels px and px + 1 (px twice at the row's end); with one, columns dx and dx + 1 of
    output px's window (dx twice at an odd window's end)."""
    if pool == 1:
        return row0 + px * sw, row0 + min(px + 1, ow - 1) * sw
    return row0 + (px * pool + dx) * sw, row0 + (px * pool + min(dx + 1, pool - 1)) * sw


@njit(**JIT)
def _conv_row_direct(xflat, toff, wflat, bias, py, pool, sh, sw, wp, o, res, res1):
    """Output row py of one sample, o (Cout, OH', OW'), after a pool x pool max pool when pool > 1. xflat is the
    padded sample (Cin, Hp, Wp) flattened, toff[t] the offset of tap t = (ci, ky, kx) within a receptive field.

    Conv pixels go in pairs and channels 32 at a time: 2 x 4 vector sums held in registers over one flat loop over
    the taps, each weight vector loaded once for both pixels, eight independent FMA chains (enough to hide the FMA
    latency); then 8 channels at a time, then single channels. Without a pool the pair is two neighbouring output
    pixels (a lone last one is computed twice, stored once). With one it is two pixels of the window, whose sums
    and running max stay in registers, so no conv output goes through memory (pooling conv rows stored
    channels-last had taken as long as CNN-2's conv1 itself); the window is scanned row by row as torch's max pool
    scans it: the earlier of equal values is kept and NaN propagates. res, res1 (Cout) are scratch."""
    ntaps = toff.shape[0]
    cout = bias.shape[0]
    ow = o.shape[2]
    pair = pool == 1                  # no pool: the two pixels are outputs px and px + 1
    wy = 1 if pair else pool          # window rows and columns scanned per output pixel
    for px in range(0, ow, 2 if pair else 1):
        c = 0
        while c + 32 <= cout:
            m0 = vload(bias, c)
            m1, m2, m3 = m0, m0, m0
            first = True
            for dy in range(wy):
                row0 = (py * wy + dy) * sh * wp
                for dx in range(0, wy, 2):
                    p0, p1 = _pixel_pair(row0, px, dx, pool, ow, sw)
                    a0 = vload(bias, c)
                    a1 = vload(bias, c + 8)
                    a2 = vload(bias, c + 16)
                    a3 = vload(bias, c + 24)
                    b0, b1, b2, b3 = a0, a1, a2, a3
                    wo = c
                    for t in range(ntaps):
                        v0 = xflat[np.uintp(p0 + toff[t])]
                        v1 = xflat[np.uintp(p1 + toff[t])]
                        a0 = vfma(wflat, wo, v0, a0)
                        a1 = vfma(wflat, wo + 8, v0, a1)
                        a2 = vfma(wflat, wo + 16, v0, a2)
                        a3 = vfma(wflat, wo + 24, v0, a3)
                        b0 = vfma(wflat, wo, v1, b0)
                        b1 = vfma(wflat, wo + 8, v1, b1)
                        b2 = vfma(wflat, wo + 16, v1, b2)
                        b3 = vfma(wflat, wo + 24, v1, b3)
                        wo += cout
                    if pair:
                        m0, m1, m2, m3 = a0, a1, a2, a3
                        vstore(res1, c, b0)
                        vstore(res1, c + 8, b1)
                        vstore(res1, c + 16, b2)
                        vstore(res1, c + 24, b3)
                        continue
                    if first:
                        m0, m1, m2, m3 = a0, a1, a2, a3
                        first = False
                    else:
                        m0 = vmax_nan(a0, m0)
                        m1 = vmax_nan(a1, m1)
                        m2 = vmax_nan(a2, m2)
                        m3 = vmax_nan(a3, m3)
                    m0 = vmax_nan(b0, m0)     # (the lone last column of an odd window: b = a, max(a, a) = a)
                    m1 = vmax_nan(b1, m1)
                    m2 = vmax_nan(b2, m2)
                    m3 = vmax_nan(b3, m3)
            vstore(res, c, m0)
            vstore(res, c + 8, m1)
            vstore(res, c + 16, m2)
            vstore(res, c + 24, m3)
            c += 32
        while c + 8 <= cout:
            m0 = vload(bias, c)
            first = True
            for dy in range(wy):
                row0 = (py * wy + dy) * sh * wp
                for dx in range(0, wy, 2):
                    p0, p1 = _pixel_pair(row0, px, dx, pool, ow, sw)
                    a0 = vload(bias, c)
                    b0 = a0
                    wo = c
                    for t in range(ntaps):
                        a0 = vfma(wflat, wo, xflat[np.uintp(p0 + toff[t])], a0)
                        b0 = vfma(wflat, wo, xflat[np.uintp(p1 + toff[t])], b0)
                        wo += cout
                    if pair:
                        m0 = a0
                        vstore(res1, c, b0)
                        continue
                    m0 = a0 if first else vmax_nan(a0, m0)
                    first = False
                    m0 = vmax_nan(b0, m0)
            vstore(res, c, m0)
            c += 8
        for cc in range(c, cout):
            for half in range(2 if pair else 1):
                first = True
                r = np.float32(0.0)
                for dy in range(wy):
                    for dx in range(wy):
                        p = (py * wy + dy) * sh * wp + ((px + half) if pair else (px * pool + dx)) * sw
                        if pair and px + half >= ow:
                            p -= sw
                        acc = bias[cc]
                        for t in range(ntaps):
                            acc += xflat[p + toff[t]] * wflat[t * cout + cc]
                        if first or acc > r or acc != acc:
                            r = acc
                        first = False
                if half == 0:
                    res[cc] = r
                else:
                    res1[cc] = r
        for co in range(cout):
            o[co, py, px] = res[co]
        if pair and px + 1 < ow:
            for co in range(cout):
                o[co, py, px + 1] = res1[co]


@kernel
def conv_direct_dense(xp, wt, bias, sh, sw, dh, dw, out, nchunks, pool):
    """Dense conv of padded xp (B, Cin, Hp, Wp) with per-tap weight vectors wt (Cin, kh, kw, Cout), then (pool > 1)
    a pool x pool max pool; out (B, Cout, OH', OW'). Output-stationary in registers (see _conv_row_direct); work
    split over (sample, band of output rows), nchunks bands per sample."""
    batch, cin, hp, wp = xp.shape
    kh, kw, cout = wt.shape[1], wt.shape[2], wt.shape[3]
    rows = out.shape[2]
    wflat = wt.reshape(-1)
    toff = np.empty(cin * kh * kw, np.int64)     # tap (ci, ky, kx) -> its offset in the receptive field
    for ci in range(cin):
        for ky in range(kh):
            for kx in range(kw):
                toff[(ci * kh + ky) * kw + kx] = (ci * hp + ky * dh) * wp + kx * dw
    band = (rows + nchunks - 1) // nchunks
    for p in prange(batch * nchunks):
        b = p // nchunks
        c = p % nchunks
        xflat = xp[b].reshape(-1)
        res = _private(cout)
        res1 = _private(cout)
        for py in range(c * band, min(rows, (c + 1) * band)):
            _conv_row_direct(xflat, toff, wflat, bias, py, pool, sh, sw, wp, out[b], res, res1)


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


@kernel
def pad_nchw(x, ph, pw, out):
    """Zero-pad x (B, C, H, W) by (ph, pw) on each side into out (B, C, H + 2ph, W + 2pw)."""
    b_, c_, h, w = x.shape
    for p in prange(b_ * c_):
        b = p // c_
        c = p % c_
        o = out[b, c]
        o[:, :] = 0.0
        for y in range(h):
            for xx in range(w):
                o[y + ph, xx + pw] = x[b, c, y, xx]


def conv_output_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def expand_groups(weight: np.ndarray, groups: int) -> np.ndarray:
    """(Cout, Cin/groups, kh, kw) -> block-diagonal (Cout, Cin, kh, kw) so grouped convs use the same kernels."""
    if groups == 1:
        return np.ascontiguousarray(weight, dtype=np.float32)
    cout, cin_g, kh, kw = weight.shape
    cout_g = cout // groups
    full = np.zeros((cout, cin_g * groups, kh, kw), np.float32)
    for g in range(groups):
        full[g * cout_g:(g + 1) * cout_g, g * cin_g:(g + 1) * cin_g] = weight[g * cout_g:(g + 1) * cout_g]
    return full


@kernel
def im2col(xp, kh, kw, sh, sw, dh, dw, cols):
    """Patches of padded xp (B, Cin, Hp, Wp) as columns: cols (B, Cin*kh*kw, OH*OW), row (ci, ky, kx) holding that
    tap's input under every output position; a conv is then one GEMM W (Cout, Cin*kh*kw) @ cols per sample. For
    few input channels (a first layer) this beats direct convolution, whose inner loops are too short."""
    batch, cin = xp.shape[0], xp.shape[1]
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    oh = cols.shape[2] // ow
    for p in prange(batch * cin):
        b = p // cin
        ci = p % cin
        plane = xp[b, ci]
        for ky in range(kh):
            for kx in range(kw):
                row = cols[b, (ci * kh + ky) * kw + kx]
                for oy in range(oh):
                    src = plane[oy * sh + ky * dh]
                    dst = row[oy * ow:(oy + 1) * ow]   # indexed from 0: no negative-index guards (a plain copy)
                    x0 = kx * dw
                    if sw == 1:
                        seg = src[x0:x0 + ow]
                        for ox in range(ow):
                            dst[ox] = seg[ox]
                    else:
                        for ox in range(ow):
                            dst[ox] = src[x0 + ox * sw]
