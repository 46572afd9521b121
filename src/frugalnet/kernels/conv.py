"""Direct (im2col-free) Conv2d kernels for sparse weights, with dense input or sparse (k-WTA) input. NCHW in/out.

* `conv_dense_input`: for each output channel, loop over its nonzero taps only; each tap adds a shifted input row,
  scaled by the weight, to an output row (contiguous, vectorised when stride is 1). Input must be padded already.
* `conv_active_dense_taps` / `conv_active_sparse_taps`: iterate over the active input positions only; each active
  input scatters value x weight-vector into the outputs it reaches (all Cout of a tap, or only its nonzero ones).
Groups are handled by the caller expanding the weight to its block-diagonal (Cout, Cin, kh, kw) form: the zeros
cost nothing in the sparse-tap layouts.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel


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
def _active_dense_part(ai, av, lo, hi, in_h, in_w, wt, sh, sw, ph, pw, dh, dw, acc):
    """Scatter active inputs lo..hi of one sample (ai / av) into acc (OH, OW, Cout). Shared by the serial and the
    parallel build of conv_active_dense_taps, so this body is compiled once."""
    kh, kw, cout = wt.shape[1], wt.shape[2], wt.shape[3]
    oh, ow = acc.shape[0], acc.shape[1]
    hw = in_h * in_w
    unit = sh == 1 and sw == 1 and dh == 1 and dw == 1
    for t in range(lo, hi):
        v = av[t]
        ci, iy, ix = unflatten_chw(ai[t], hw, in_w)
        if unit:  # stride 1, dilation 1: the reachable taps form one rectangle, no per-tap tests
            ny, nx = iy + ph, ix + pw
            for ky in range(max(0, ny - oh + 1), min(kh, ny + 1)):
                arow = acc[ny - ky]
                wrow = wt[ci, ky]
                for kx in range(max(0, nx - ow + 1), min(kw, nx + 1)):
                    w = wrow[kx]
                    a = arow[nx - kx]
                    for co in range(cout):
                        a[co] += v * w[co]
            continue
        for ky in range(kh):
            oy = tap_output(iy, ph, ky, dh, sh, oh)
            if oy < 0:
                continue
            for kx in range(kw):
                ox = tap_output(ix, pw, kx, dw, sw, ow)
                if ox < 0:
                    continue
                w = wt[ci, ky, kx]
                a = acc[oy, ox]
                for co in range(cout):
                    a[co] += v * w[co]


@kernel
def conv_active_dense_taps(aidx, aval, counts, in_h, in_w, wt, bias, sh, sw, ph, pw, dh, dw, out, nchunks):
    """Sparse-input conv with per-tap dense weight vectors wt (Cin, kh, kw, Cout); out (B, Cout, OH, OW)."""
    batch = aidx.shape[0]
    oh, ow, cout = out.shape[2], out.shape[3], wt.shape[3]
    part = np.zeros((batch * nchunks, oh, ow, cout), dtype=np.float32)
    for p in prange(batch * nchunks):
        b = p // nchunks
        c = p % nchunks
        n = counts[b]
        step = (n + nchunks - 1) // nchunks
        _active_dense_part(aidx[b], aval[b], c * step, min(n, (c + 1) * step), in_h, in_w, wt, sh, sw, ph, pw, dh,
                           dw, part[p])
    _gather_parts(part, bias, nchunks, out)


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
                    base = oy * ow
                    x0 = kx * dw
                    if sw == 1:
                        for ox in range(ow):
                            row[base + ox] = src[x0 + ox]
                    else:
                        for ox in range(ow):
                            row[base + ox] = src[x0 + ox * sw]
