"""Sparse W (CSR) x dense row-major X: out (M, N) = W (M, K) @ X (K, N) + bias, the N columns in vector lanes.

Used by the engine's `im2col_csr` conv (X = im2col columns, N = output positions): each nonzero weight adds its
scaled input row to its output row, held in registers. Why a kernel of its own: `linear.csr_rows_t` takes the
columns 64 at a time and then 8 at a time in one register, so at N = 16 (a ResNet's last stage at CIFAR size, 4 x 4
positions) every nonzero waited on the previous one's fused multiply-add (one dependency chain per 8 lanes, about 4
cycles each). Here blocks of 16 columns run four chains, taking the nonzeros in turn, and add them at the end; so
each output sums its terms in a different order than a left-to-right dot product (float rounding differs in the
last bits; the engine compares every variant with PyTorch before choosing it).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.simd import LANES, vfma, vload, vstore


@njit(**JIT, inline="always")
def _block64(xflat, n, c, lo, hi, idx, val, o):
    """o[c:c + 64] += the row's terms at columns c..c + 63: eight independent chains (one per 8 lanes)."""
    a0 = vload(o, c)
    a1 = vload(o, c + 8)
    a2 = vload(o, c + 16)
    a3 = vload(o, c + 24)
    a4 = vload(o, c + 32)
    a5 = vload(o, c + 40)
    a6 = vload(o, c + 48)
    a7 = vload(o, c + 56)
    for j in range(lo, hi):
        b = np.intp(idx[j]) * n + c
        v = val[j]
        a0 = vfma(xflat, b, v, a0)
        a1 = vfma(xflat, b + 8, v, a1)
        a2 = vfma(xflat, b + 16, v, a2)
        a3 = vfma(xflat, b + 24, v, a3)
        a4 = vfma(xflat, b + 32, v, a4)
        a5 = vfma(xflat, b + 40, v, a5)
        a6 = vfma(xflat, b + 48, v, a6)
        a7 = vfma(xflat, b + 56, v, a7)
    vstore(o, c, a0)
    vstore(o, c + 8, a1)
    vstore(o, c + 16, a2)
    vstore(o, c + 24, a3)
    vstore(o, c + 32, a4)
    vstore(o, c + 40, a5)
    vstore(o, c + 48, a6)
    vstore(o, c + 56, a7)


@njit(**JIT, inline="always")
def _block16(xflat, n, c, lo, hi, idx, val, o, part):
    """o[c:c + 16] += the row's terms at columns c..c + 15: four chains taking the nonzeros in turn, added at the
    end (part: 64 floats of scratch)."""
    for i in range(8 * LANES):
        part[i] = 0.0
    a0 = vload(o, c)
    a1 = vload(o, c + 8)
    a2 = vload(part, 16)
    a3 = vload(part, 24)
    a4 = vload(part, 32)
    a5 = vload(part, 40)
    a6 = vload(part, 48)
    a7 = vload(part, 56)
    j = lo
    while j + 4 <= hi:
        b = np.intp(idx[j]) * n + c
        a0 = vfma(xflat, b, val[j], a0)
        a1 = vfma(xflat, b + 8, val[j], a1)
        b = np.intp(idx[j + 1]) * n + c
        a2 = vfma(xflat, b, val[j + 1], a2)
        a3 = vfma(xflat, b + 8, val[j + 1], a3)
        b = np.intp(idx[j + 2]) * n + c
        a4 = vfma(xflat, b, val[j + 2], a4)
        a5 = vfma(xflat, b + 8, val[j + 2], a5)
        b = np.intp(idx[j + 3]) * n + c
        a6 = vfma(xflat, b, val[j + 3], a6)
        a7 = vfma(xflat, b + 8, val[j + 3], a7)
        j += 4
    while j < hi:
        b = np.intp(idx[j]) * n + c
        a0 = vfma(xflat, b, val[j], a0)
        a1 = vfma(xflat, b + 8, val[j], a1)
        j += 1
    vstore(part, 0, a0)
    vstore(part, 8, a1)
    vstore(part, 16, a2)
    vstore(part, 24, a3)
    vstore(part, 32, a4)
    vstore(part, 40, a5)
    vstore(part, 48, a6)
    vstore(part, 56, a7)
    for i in range(2 * LANES):
        o[c + i] = (part[i] + part[16 + i]) + (part[32 + i] + part[48 + i])


@kernel
def csr_rows_cols(ptr, idx, val, x, bias, out, nparts):
    """out[r, c] = bias[r] + sum over j in ptr[r]..ptr[r + 1] of val[j] * x[idx[j], c]. x (K, N) and out (M, N)
    C-contiguous float32. The output rows are split into `nparts` contiguous parts (one per thread); each part goes over the
    columns block by block, all its rows per block, so one block of x (K x 64 floats) serves every row from cache
    (a CIFAR ResNet's first stage has 1024 positions: its whole im2col matrix does not fit in L2)."""
    m = ptr.shape[0] - 1
    n = x.shape[1]
    xflat = x.reshape(-1)
    nparts = max(1, min(nparts, m))
    for p in prange(nparts):
        r0 = p * m // nparts
        r1 = (p + 1) * m // nparts
        part = np.zeros(8 * LANES, np.float32)
        for r in range(r0, r1):
            o = out[r]
            for c in range(n):
                o[c] = bias[r]
        c = 0
        while c + 8 * LANES <= n:
            for r in range(r0, r1):
                _block64(xflat, n, c, ptr[r], ptr[r + 1], idx, val, out[r])
            c += 8 * LANES
        while c + 2 * LANES <= n:
            for r in range(r0, r1):
                _block16(xflat, n, c, ptr[r], ptr[r + 1], idx, val, out[r], part)
            c += 2 * LANES
        for r in range(r0, r1):            # the last n % 16 columns
            o = out[r]
            for cc in range(c, n):
                acc = o[cc]
                for j in range(ptr[r], ptr[r + 1]):
                    acc += val[j] * xflat[np.intp(idx[j]) * n + cc]
                o[cc] = acc


def check_csr_rows_cols(ptr, idx, val, x, bias, out) -> None:
    """What csr_rows_cols reads, validated (it does no bounds checks): shapes, dtypes, pointers and indices."""
    for name, a, nd in (("x", x, 2), ("bias", bias, 1), ("out", out, 2), ("val", val, 1)):
        if a.dtype != np.float32 or a.ndim != nd or not a.flags.c_contiguous:
            raise ValueError(f"csr_rows_cols: {name} must be a C-contiguous {nd}-D float32 array")
    m, k = out.shape[0], x.shape[0]
    if ptr.ndim != 1 or ptr.shape[0] != m + 1 or bias.shape[0] != m or out.shape[1] != x.shape[1]:
        raise ValueError(f"csr_rows_cols: shapes do not fit: ptr {ptr.shape}, x {x.shape}, out {out.shape}")
    if ptr[0] != 0 or np.any(np.diff(ptr) < 0) or ptr[-1] != idx.shape[0] or idx.shape != val.shape:
        raise ValueError("csr_rows_cols: ptr must rise from 0 to the number of entries")
    if idx.size and (idx.min() < 0 or idx.max() >= k):
        raise ValueError(f"csr_rows_cols: column indices must lie in [0, {k})")
