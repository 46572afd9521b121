"""Sparse Linear kernels: y = x W^T + b with W sparse and x dense, or x given as k-WTA winners (indices, values).

Kernels write into a caller-provided output so the engine can reuse buffers. Shapes: W is (out, in); x is (B, in);
the active-input form is `aidx` (B, K) int32 positions, `aval` (B, K) values and `counts` (B,) how many of the K
slots are used in each row (k-WTA gives exactly k; a scan of a dense input gives its nonzeros).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.simd import axpy_segments


@kernel
def csr_rows(ptr, idx, val, x, bias, out):
    """Sparse W (CSR) x dense x, one dot product per (row, sample); parallel over output rows. Best at batch 1."""
    batch = x.shape[0]
    for r in prange(ptr.shape[0] - 1):
        n = ptr[r + 1] - ptr[r]
        ri = idx[ptr[r]:ptr[r + 1]]     # the row's entries, indexed from 0 (see scatter_column)
        rv = val[ptr[r]:ptr[r + 1]]
        for b in range(batch):
            xb = x[b]
            # four independent float32 partial sums: one running sum would wait on the adder's latency each step
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            j = 0
            while j + 4 <= n:
                a0 += rv[j] * xb[ri[j]]
                a1 += rv[j + 1] * xb[ri[j + 1]]
                a2 += rv[j + 2] * xb[ri[j + 2]]
                a3 += rv[j + 3] * xb[ri[j + 3]]
                j += 4
            while j < n:
                a0 += rv[j] * xb[ri[j]]
                j += 1
            out[b, r] = ((a0 + a1) + (a2 + a3)) + bias[r]


@kernel
def csr_rows_t(ptr, idx, val, xt, bias, out_t):
    """Sparse W (CSR) x dense input held transposed, xt (in, B) -> out_t (out, B): each nonzero adds a scaled row
    of xt to its output row; the output row (the whole batch) is summed in registers, 64 samples at a time
    (simd.axpy_segments), so memory traffic is the rows of xt alone. Best at larger batches."""
    batch = xt.shape[1]
    xflat = xt.reshape(-1)
    for r in prange(ptr.shape[0] - 1):
        lo = ptr[r]
        n = ptr[r + 1] - lo
        offs = np.empty(n, np.int64)
        for j in range(n):
            offs[j] = np.int64(idx[lo + j]) * batch
        seg = np.zeros(3, np.int32)     # one segment: entries 0..n, base 0
        seg[1] = n
        acc = out_t[r]
        for b in range(batch):
            acc[b] = bias[r]
        axpy_segments(xflat, seg, seg[1:], seg[2:], 1, offs, val[lo:lo + n], acc, 0, batch)


@kernel
def nonzeros(x, aidx, aval, counts):
    """Write the nonzero entries of each row of x (B, n) as positions/values; aidx, aval must be (B, n)."""
    for b in prange(x.shape[0]):
        c = 0
        row = x[b]
        for i in range(row.shape[0]):
            v = row[i]
            if v != 0:
                aidx[b, c] = i
                aval[b, c] = v
                c += 1
        counts[b] = c


@kernel
def csc_active(ptr, idx, val, aidx, aval, counts, bias, out, nchunks):
    """Sparse W (CSC, per input column) x sparse input: each active input adds its column, scaled by its value,
    to the outputs, so only the weights of active inputs are touched. Work is split over batch x `nchunks` pieces
    of each row's active list (nchunks > 1 lets two threads share a batch-1 call); partial sums are then added."""
    batch = aidx.shape[0]
    n_out = out.shape[1]
    part = np.zeros((batch * nchunks, n_out), dtype=np.float32)
    for p in prange(batch * nchunks):
        b = p // nchunks
        c = p % nchunks
        n = counts[b]
        step = (n + nchunks - 1) // nchunks
        acc = part[p]
        for t in range(c * step, min(n, (c + 1) * step)):
            i = aidx[b, t]
            v = aval[b, t]
            for j in range(ptr[i], ptr[i + 1]):
                acc[idx[j]] += v * val[j]
    for b in range(batch):  # cheap: O(batch x out)
        o = out[b]
        for r in range(n_out):
            o[r] = bias[r]
        for c in range(nchunks):
            acc = part[b * nchunks + c]
            for r in range(n_out):
                o[r] += acc[r]


@kernel
def dense_active(wt, aidx, aval, counts, bias, out):
    """Dense W held as wt (in, out) x sparse input: each active input adds its (contiguous) weight row. Work goes
    by blocks of 64 output units (parallel over blocks), each block built in registers (simd.axpy_segments) for
    every sample in turn: a block's slice of W (64 x in floats) stays in cache across the batch instead of the
    whole W streaming through once per sample."""
    batch, n_out = out.shape
    wflat = wt.reshape(-1)
    width = 64
    for blk in prange((n_out + width - 1) // width):
        c0 = blk * width
        nc = min(width, n_out - c0)
        offs = np.empty(aidx.shape[1], np.int64)
        seg = np.zeros(3, np.int32)     # one segment: entries 0..seg[1], base 0
        for b in range(batch):
            n = counts[b]
            for t in range(n):
                offs[t] = np.int64(aidx[b, t]) * n_out
            seg[1] = n
            o = out[b]
            for r in range(c0, c0 + nc):
                o[r] = bias[r]
            axpy_segments(wflat, seg, seg[1:], seg[2:], 1, offs, aval[b], o, c0, nc)


def row_splits(csc, nparts: int) -> np.ndarray:
    """(n_in, nparts + 1) positions cutting every column of a CSC weight at the output-row boundaries
    r_p = p * n_out / nparts (rows are sorted within a column): part p of column i is split[i, p]:split[i, p + 1].
    Lets threads own disjoint output-row ranges, so they write straight into the output with no partial sums."""
    n_out = csc.shape[0]
    bounds = np.array([(p * n_out) // nparts for p in range(nparts + 1)], np.int64)
    split = np.empty((len(csc.ptr) - 1, nparts + 1), csc.ptr.dtype)
    _row_splits(csc.ptr, csc.idx, bounds, split)
    return split


@njit(**JIT)
def _row_splits(ptr, idx, bounds, split):
    for i in range(ptr.shape[0] - 1):
        s, e = ptr[i], ptr[i + 1]
        split[i, 0] = s
        j = s
        for p in range(1, bounds.shape[0] - 1):
            while j < e and idx[j] < bounds[p]:
                j += 1
            split[i, p] = j
        split[i, bounds.shape[0] - 1] = e


@njit(**JIT)
def scatter_column(o, idx, val, lo, hi, v):
    """o[idx[j]] += v * val[j] for j in lo..hi, the rows idx[lo:hi] distinct (one column of a CSC matrix): four
    loads before four stores, as distinct rows cannot alias, so the updates overlap instead of queueing (measured
    192 -> 155 us on the 4096 x 4096 w=0.9 x=0.9 batch-1 case, one thread).

    The column is taken as slices indexed from 0: with j from lo (of unknown sign) numba guards every access
    against negative indices, a compare and a conditional move per load, which took 265 -> 148 us off the same
    case (one thread)."""
    n = hi - lo
    ci = idx[lo:hi]
    cv = val[lo:hi]
    j = 0
    while j + 4 <= n:
        r0 = ci[j]
        r1 = ci[j + 1]
        r2 = ci[j + 2]
        r3 = ci[j + 3]
        a0 = o[r0] + v * cv[j]
        a1 = o[r1] + v * cv[j + 1]
        a2 = o[r2] + v * cv[j + 2]
        a3 = o[r3] + v * cv[j + 3]
        o[r0] = a0
        o[r1] = a1
        o[r2] = a2
        o[r3] = a3
        j += 4
    while j < n:
        o[ci[j]] += v * cv[j]
        j += 1


@kernel
def csc_active_rows(split, idx, val, aidx, aval, counts, bias, out):
    """Sparse W (CSC, cut by `row_splits`) x sparse input, parallel over (sample, output-row part): each part
    touches only its rows of the active inputs' columns and writes them directly (no reduction). Zero values are
    skipped, so a dense input can be passed as is (aidx = every index, aval = the row): no conversion needed."""
    batch = aidx.shape[0]
    nparts = split.shape[1] - 1
    n_out = out.shape[1]
    for p in prange(batch * nparts):
        b = p // nparts
        part = p % nparts
        o = out[b]
        for r in range((part * n_out) // nparts, ((part + 1) * n_out) // nparts):
            o[r] = bias[r]
        for t in range(counts[b]):
            v = aval[b, t]
            if v != 0:
                i = aidx[b, t]
                scatter_column(o, idx, val, split[i, part], split[i, part + 1], v)


@njit(**JIT)
def transpose_active(aidx, aval, counts, n_in, xptr, xs, xv):
    """Active (sample, value) pairs grouped by input: xptr (n_in + 1), xs / xv (total active), samples ascending."""
    for i in range(n_in + 1):
        xptr[i] = 0
    for b in range(aidx.shape[0]):
        for t in range(counts[b]):
            xptr[aidx[b, t] + 1] += 1
    for i in range(n_in):
        xptr[i + 1] += xptr[i]
    fill = xptr[:-1].copy()
    for b in range(aidx.shape[0]):
        for t in range(counts[b]):
            i = aidx[b, t]
            q = fill[i]
            xs[q] = b
            xv[q] = aval[b, t]
            fill[i] = q + 1


@njit(**JIT)
def _fill_bias(out, bias, lo, hi):
    """out[:, lo:hi] = bias[lo:hi] for every row (sample)."""
    for b in range(out.shape[0]):
        o = out[b]
        for r in range(lo, hi):
            o[r] = bias[r]


@kernel
def csc_active_batched(split, idx, val, xptr, xs, xv, bias, out):
    """Sparse W (CSC, cut by `row_splits`) x a sparse batch grouped by input (`transpose_active`): every weight
    column is read once for all the samples it serves (not once per sample), parallel over output-row parts."""
    nparts = split.shape[1] - 1
    n_out = out.shape[1]
    n_in = xptr.shape[0] - 1
    for part in prange(nparts):
        lo = (part * n_out) // nparts
        hi = ((part + 1) * n_out) // nparts
        _fill_bias(out, bias, lo, hi)
        for i in range(n_in):
            s, e = split[i, part], split[i, part + 1]
            if s == e:
                continue
            for q in range(xptr[i], xptr[i + 1]):
                scatter_column(out[xs[q]], idx, val, s, e, xv[q])


# ---- plain-numpy conveniences (allocate the output); the engine calls the kernels directly ----------------------

def _bias(bias, n: int) -> np.ndarray:
    return np.zeros(n, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32)


def active_inputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(aidx int32, aval, counts) of the nonzeros of each row of a dense (B, n) float32 array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    aidx = np.zeros(x.shape, np.int32)  # unused slots stay valid (index 0, value 0)
    aval = np.zeros(x.shape, np.float32)
    counts = np.empty(x.shape[0], np.int32)
    nonzeros(x, aidx, aval, counts)
    k = int(counts.max()) if len(counts) else 0
    return aidx[:, :k].copy(), aval[:, :k].copy(), counts


def sparse_dense_linear(csr, x: np.ndarray, bias=None, transposed: bool = False) -> np.ndarray:
    """y = x W^T + b for W given as CSR (layouts.to_csr) and dense x (B, in)."""
    n_out, n_in = csr.shape
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must be (batch, {n_in}), got {x.shape}")
    b = _bias(bias, n_out)
    if transposed:
        out_t = np.empty((n_out, x.shape[0]), np.float32)
        csr_rows_t(csr.ptr, csr.idx, csr.val, np.ascontiguousarray(x.T), b, out_t)
        return np.ascontiguousarray(out_t.T)
    out = np.empty((x.shape[0], n_out), np.float32)
    csr_rows(csr.ptr, csr.idx, csr.val, x, b, out)
    return out


def sparse_sparse_linear(csc, aidx: np.ndarray, aval: np.ndarray, counts: np.ndarray | None = None, bias=None,
                         nchunks: int = 1) -> np.ndarray:
    """y = x W^T + b for W given as CSC (layouts.to_csc) and x given by its active inputs (B, K) per row."""
    n_out, n_in = csc.shape
    aidx = np.ascontiguousarray(aidx, dtype=np.int32)
    aval = np.ascontiguousarray(aval, dtype=np.float32)
    if aidx.shape != aval.shape or aidx.ndim != 2:
        raise ValueError(f"aidx and aval must be (batch, K) of equal shape, got {aidx.shape} and {aval.shape}")
    if aidx.size and (aidx.min() < 0 or aidx.max() >= n_in):
        raise ValueError(f"active input indices must lie in [0, {n_in})")
    if counts is None:
        counts = np.full(aidx.shape[0], aidx.shape[1], np.int32)
    out = np.empty((aidx.shape[0], n_out), np.float32)
    csc_active(csc.ptr, csc.idx, csc.val, aidx, aval, np.ascontiguousarray(counts, dtype=np.int32),
               _bias(bias, n_out), out, int(nchunks))
    return out
