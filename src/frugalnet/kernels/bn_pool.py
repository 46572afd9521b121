"""Numba kernels for batch norm (training statistics, no affine) -> 2x2 max-pool -> k-WTA as one block: the batch
statistics and the pooling in one pass over the convolution's output, and a backward that writes the batch norm's
input gradient in one pass from the k-WTA winners' gradients alone (nn.fused_blocks).

Why it is exact: batch norm without affine parameters is x -> (x - mean) * invstd per channel, with invstd > 0, a
non-decreasing map (float rounding is monotone), so max-pooling its output equals normalising the max-pooled input:
the max is taken on the raw values and only the pooled quarter is normalised. Backward, only the k-WTA's winners
carry gradient, each to its window's maximum, so the batch norm's two gradient sums per channel (of dy and of
dy * x_hat) are sums over the winners, and its input gradient is invstd * (dy - mean(dy) - x_hat * mean(dy x_hat))
everywhere: dense, but written in one pass from the saved input, where PyTorch runs the k-WTA's, the max-pool's and
the batch norm's backward as three passes over dense tensors.

BatchNorm1d -> KWinners on (B, n) rows gets the same treatment (column_stats, normalize_columns,
bn_kwta_grad_rows; the gradient coefficients from bn_grad_coefficients on the rows viewed (B, n, 1, 1)).

Layouts: y, pooled, arg and dy are 4-D arrays indexed (B, H, W, C) (channels-last memory for a channels-last
tensor; any strides work); k-WTA rows are (B, C * HP * WP) in NCHW order (the k-WTA's logical order).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from frugalnet.kernels._jit import kernel


@kernel
def stats_pool2(y, shift, pooled, arg, sums, squares):
    """pooled[b, i, j, c] = max of y's 2x2 window (2i.., 2j..) of channel c, arg its offset in the window (0..3, row
    major; the first maximum, a NaN wins as in PyTorch's max-pool); sums[c] / squares[c] (float64, zeroed here) =
    sum of (y - shift[c]) and of its square over every position of channel c (odd edges included). Parallel over
    channels' blocks is not worth it here (one pass over memory); the parallel build splits the batch and adds
    per-chunk sums."""
    batch, h, w, n_c = y.shape
    hp, wp = h // 2, w // 2
    nchunks = max(1, min(batch, 2))
    part_s = np.zeros((nchunks, n_c), np.float64)
    part_q = np.zeros((nchunks, n_c), np.float64)
    for chunk in prange(nchunks):
        ps = part_s[chunk]
        pq = part_q[chunk]
        for b in range((chunk * batch) // nchunks, ((chunk + 1) * batch) // nchunks):
            for i in range(hp):
                for j in range(wp):
                    r0 = y[b, 2 * i, 2 * j]
                    r1 = y[b, 2 * i, 2 * j + 1]
                    r2 = y[b, 2 * i + 1, 2 * j]
                    r3 = y[b, 2 * i + 1, 2 * j + 1]
                    po = pooled[b, i, j]
                    ao = arg[b, i, j]
                    for c in range(n_c):
                        v0, v1, v2, v3 = r0[c], r1[c], r2[c], r3[c]
                        m, a = v0, 0
                        if v1 > m or v1 != v1:
                            m, a = v1, 1
                        if v2 > m or v2 != v2:
                            m, a = v2, 2
                        if v3 > m or v3 != v3:
                            m, a = v3, 3
                        po[c] = m
                        ao[c] = a
                        s = shift[c]
                        d0, d1, d2, d3 = (np.float64(v0) - s, np.float64(v1) - s, np.float64(v2) - s,
                                          np.float64(v3) - s)
                        ps[c] += (d0 + d1) + (d2 + d3)
                        pq[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
            for i in range(h):                      # odd edges: in the statistics, outside every window
                for j in range(w):
                    if i < 2 * hp and j < 2 * wp:
                        continue
                    r = y[b, i, j]
                    for c in range(n_c):
                        d = np.float64(r[c]) - shift[c]
                        ps[c] += d
                        pq[c] += d * d
    for c in range(n_c):
        sums[c] = 0.0
        squares[c] = 0.0
    for chunk in range(nchunks):
        for c in range(n_c):
            sums[c] += part_s[chunk, c]
            squares[c] += part_q[chunk, c]


@kernel
def normalize_rows(pooled, mean, invstd, rows):
    """rows[b, c * HP * WP + i * WP + j] = (pooled[b, i, j, c] - mean[c]) * invstd[c]: the normalised pooled map in
    the k-WTA's NCHW row order."""
    batch, hp, wp, n_c = pooled.shape
    plane = hp * wp
    for b in prange(batch):
        r = rows[b]
        for i in range(hp):
            for j in range(wp):
                src = pooled[b, i, j]
                p = i * wp + j
                for c in range(n_c):
                    r[c * plane + p] = (src[c] - mean[c]) * invstd[c]


@kernel
def bn_grad_coefficients(g, aidx, aval, invstd, count, wp, a, beta):
    """Per channel, the batch norm's input gradient outside the winners' window maxima, dy = a + beta * (y - mean):
    a = -invstd * sum(dxh) / count, beta = -invstd^2 * sum(dxh * x_hat) / count, where dxh (the gradient at the
    batch norm's output) is g (B, C, HP, WP) at the k-WTA's winners aidx (B, k; NCHW flat indices) and 0 elsewhere,
    and aval (B, k) is x_hat there (the k-WTA's input at its winners). Sums in float64."""
    n_c = a.shape[0]
    plane = g.shape[2] * g.shape[3]
    m1 = np.zeros(n_c, np.float64)
    m2 = np.zeros(n_c, np.float64)
    for b in range(aidx.shape[0]):
        for t in range(aidx.shape[1]):
            u = aidx[b, t]
            c = u // plane
            p = u - c * plane
            gv = np.float64(g[b, c, p // wp, p % wp])
            m1[c] += gv
            m2[c] += gv * aval[b, t]
    for c in range(n_c):
        s = np.float64(invstd[c])
        a[c] = np.float32(-s * m1[c] / count)
        beta[c] = np.float32(-s * s * m2[c] / count)


@kernel
def bn_pool_kwta_grad(g, aidx, arg, y, mean, invstd, a, beta, dy):
    """dy (B, H, W, C) = the gradient at the batch norm's input: a + beta * (y - mean) per channel (see
    bn_grad_coefficients), plus invstd * g at each winner's window maximum (arg: the pooling's offsets); g
    (B, C, HP, WP) is read at the winners aidx only."""
    batch, h, w, n_c = y.shape
    hp, wp = arg.shape[1], arg.shape[2]
    plane = hp * wp
    for b in prange(batch):
        for i in range(h):
            for j in range(w):
                src = y[b, i, j]
                dst = dy[b, i, j]
                for c in range(n_c):
                    dst[c] = a[c] + beta[c] * (src[c] - mean[c])
        for t in range(aidx.shape[1]):
            u = aidx[b, t]
            c = u // plane
            p = u - c * plane
            i, j = p // wp, p % wp
            off = arg[b, i, j, c]
            dy[b, 2 * i + off // 2, 2 * j + off % 2, c] += invstd[c] * g[b, c, i, j]


@kernel
def column_stats(x, shift, sums, squares):
    """sums[j] / squares[j] (float64, zeroed here) = sum over rows of (x[:, j] - shift[j]) and of its square: the
    batch statistics of BatchNorm1d on (B, n) rows."""
    n = x.shape[1]
    for j in range(n):
        sums[j] = 0.0
        squares[j] = 0.0
    for b in range(x.shape[0]):
        r = x[b]
        for j in range(n):
            d = np.float64(r[j]) - shift[j]
            sums[j] += d
            squares[j] += d * d


@kernel
def normalize_columns(x, mean, invstd, out):
    """out = (x - mean) * invstd per column of (B, n) rows."""
    for b in prange(x.shape[0]):
        r = x[b]
        o = out[b]
        for j in range(x.shape[1]):
            o[j] = (r[j] - mean[j]) * invstd[j]


@kernel
def bn_kwta_grad_rows(g, aidx, x, mean, invstd, a, beta, dx):
    """dx (B, n) = a + beta * (x - mean) per column, plus invstd * g at the k-WTA's winners aidx (B, k): the input
    gradient of BatchNorm1d -> KWinners (a and beta from bn_grad_coefficients on g viewed (B, n, 1, 1))."""
    for b in prange(x.shape[0]):
        r = x[b]
        o = dx[b]
        for j in range(x.shape[1]):
            o[j] = a[j] + beta[j] * (r[j] - mean[j])
        gb = g[b]
        for t in range(aidx.shape[1]):
            u = aidx[b, t]
            o[u] += invstd[u] * gb[u]
