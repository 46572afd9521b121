"""Direct (im2col-free) Conv2d kernels with dense input, im2col and padding, NCHW in/out. The sparse-input (k-WTA)
kernels live in kernels/conv_active.py (re-exported here).

* `conv_dense_input`: for each output channel, loop over its nonzero taps only; each tap adds a shifted input row,
  scaled by the weight, to an output row (contiguous, vectorised when stride is 1). Input must be padded already.
* `conv_direct_dense`: dense weights and dense input, output-stationary: two output pixels' sums over 32 output
  channels held in registers across all taps, and with a max pool the window's running max too; for layers with
  few input channels (a first layer), where a GEMM's im2col copy and call overhead outweigh the arithmetic.
Groups are handled by the caller expanding the weight to its block-diagonal (Cout, Cin, kh, kw) form: the zeros
cost nothing in the sparse-tap layouts.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.conv_active import (_private, bucket_by_position, conv_active_dense_taps,  # noqa: F401
                                           conv_active_sparse_taps, tap_output, unflatten_chw)
from frugalnet.kernels.simd import vfma, vload, vmax_nan, vstore

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
