"""Numba kernels for *training* SparseConv2d (stride 1, no padding, no dilation, one group) on a sparse input:
the forward output and the weight gradient touch only the input's nonzeros (k-WTA feature maps: CNN-2's conv2
reads a 9.5%-nonzero map), each nonzero scattering one output-channel vector per kernel tap.

Layouts: x (B, C, H, W) as given; the weight transposed to wt (C, KH, KW, O) so that one input value times one tap
is a contiguous O-vector; outputs and output gradients channels-last, (B, OH, OW, O), so that the same O-vector is
contiguous there too (the plain loops below vectorise over O). A dense input works as well (zeros are skipped, the
rest is the direct convolution).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from frugalnet.kernels._jit import kernel


@kernel
def conv_fwd_active(x, wt, bias, out):
    """out (B, OH, OW, O) = conv(x, W) + bias, channels-last, from the nonzeros of x (B, C, H, W) and
    wt (C, KH, KW, O). Parallel over samples."""
    batch, n_c, h, w = x.shape
    kh_n, kw_n, n_o = wt.shape[1], wt.shape[2], wt.shape[3]
    oh, ow = out.shape[1], out.shape[2]
    for b in prange(batch):
        ob = out[b]
        for y in range(oh):
            for xx in range(ow):
                r = ob[y, xx]
                for o in range(n_o):
                    r[o] = bias[o]
        for c in range(n_c):
            xc = x[b, c]
            wc = wt[c]
            for iy in range(h):
                k0 = max(0, iy - oh + 1)
                k1 = min(kh_n, iy + 1)
                for ix in range(w):
                    v = xc[iy, ix]
                    if v == 0:
                        continue
                    j0 = max(0, ix - ow + 1)
                    j1 = min(kw_n, ix + 1)
                    for kh in range(k0, k1):
                        for kw in range(j0, j1):
                            r = ob[iy - kh, ix - kw]
                            wr = wc[kh, kw]
                            for o in range(n_o):
                                r[o] += v * wr[o]


@kernel
def conv_gw_active(x, gy, gwt):
    """gwt (C, KH, KW, O) = the weight gradient sum_b,y,x x[b, c, y+kh, x+kw] gy[b, y, x, o], from the nonzeros
    of x (B, C, H, W) and gy channels-last (B, OH, OW, O). Parallel over input channels (each owns its slice)."""
    batch, n_c, h, w = x.shape
    kh_n, kw_n, n_o = gwt.shape[1], gwt.shape[2], gwt.shape[3]
    oh, ow = gy.shape[1], gy.shape[2]
    for c in prange(n_c):
        gc = gwt[c]
        for kh in range(kh_n):
            for kw in range(kw_n):
                g = gc[kh, kw]
                for o in range(n_o):
                    g[o] = 0.0
        for b in range(batch):
            xc = x[b, c]
            gb = gy[b]
            for iy in range(h):
                k0 = max(0, iy - oh + 1)
                k1 = min(kh_n, iy + 1)
                for ix in range(w):
                    v = xc[iy, ix]
                    if v == 0:
                        continue
                    j0 = max(0, ix - ow + 1)
                    j1 = min(kw_n, ix + 1)
                    for kh in range(k0, k1):
                        for kw in range(j0, j1):
                            g = gc[kh, kw]
                            r = gb[iy - kh, ix - kw]
                            for o in range(n_o):
                                g[o] += v * r[o]


def conv2d_active(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Valid stride-1 convolution (B, C, H, W) * (O, C, KH, KW) -> (B, O, OH, OW) through conv_fwd_active (a
    convenience for tests and the reference call pattern)."""
    x = np.ascontiguousarray(x, np.float32)
    weight = np.asarray(weight, np.float32)
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"x must be (B, C, H, W) and weight (O, C, KH, KW) with the same C, got {x.shape} and "
                         f"{weight.shape}")
    n_o, _, kh, kw = weight.shape
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel {kh}x{kw} is larger than the input {x.shape[2]}x{x.shape[3]}")
    wt = np.ascontiguousarray(weight.transpose(1, 2, 3, 0))
    b = np.zeros(n_o, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    out = np.empty((x.shape[0], oh, ow, n_o), np.float32)
    conv_fwd_active(x, wt, b, out)
    return out.transpose(0, 3, 1, 2)


@kernel
def col2im_add(cols, gx):
    """gx (B, C, H, W) = the sum of the patch columns cols (B, OH, OW, C, KH, KW) over the positions they cover
    (the input gradient's fold after its GEMM, gy (B*OH*OW, O) x W (O, C*KH*KW)). Parallel over samples."""
    batch, n_c, h, w = gx.shape
    oh, ow, kh_n, kw_n = cols.shape[1], cols.shape[2], cols.shape[4], cols.shape[5]
    for b in prange(batch):
        g = gx[b]
        for c in range(n_c):
            for iy in range(h):
                for ix in range(w):
                    g[c, iy, ix] = 0.0
        for y in range(oh):
            for xx in range(ow):
                p = cols[b, y, xx]
                for c in range(n_c):
                    gc = g[c]
                    pc = p[c]
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            gc[y + kh, xx + kw] += pc[kh, kw]


@kernel
def im2col_rows(x, kh_n, kw_n, cols):
    """cols (B * OH * OW, C * KH * KW): the row of output position (b, y, x) holds the input patch
    x[b, :, y:y+KH, x:x+KW] in the weight's (C, KH, KW) order, so that the forward is one GEMM, cols @ W^T, whose
    (B*OH*OW, O) result is already channels-last, and the weight gradient another, gy^T @ cols. Pays where the
    input has few channels (CNN-2's conv1: PyTorch's convolution of a one-channel image is far from its GEMM
    speed). Parallel over samples."""
    batch, n_c, h, w = x.shape
    oh, ow = h - kh_n + 1, w - kw_n + 1
    for b in prange(batch):
        for y in range(oh):
            for xx in range(ow):
                r = cols[(b * oh + y) * ow + xx]
                t = 0
                for c in range(n_c):
                    for kh in range(kh_n):
                        src = x[b, c, y + kh]
                        for kw in range(kw_n):
                            r[t] = src[xx + kw]
                            t += 1
