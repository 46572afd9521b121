"""Training kernels that take the active lists k-WTA already knows instead of scanning or transposing dense arrays.

k-WTA picks its winners per sample; the layer after it receives them as (aidx, aval) lists (B, k), and the
gradient k-WTA passes back is nonzero only at the same winners. So:

* the weight gradient gW = gy^T x at the mask wants, for each output unit o, the samples whose gradient reaches
  it: `by_unit` turns the per-sample lists of gy into per-unit lists (a counting sort, samples ascending), and
  `sddmm_lists` (dense x) / `sddmm_lists_both` (x also as lists) loop over those only: no (out, B) transpose of
  gy, no branch over the B x out zeros;
* the forward of a layer with a dense input (the MLP's first layer) runs batch-in-registers over the input held
  transposed, and `csr_rows_tt` writes its output straight in (B, out) order through a small per-thread tile,
  instead of an (out, B) result that a separate copy transposes.

Each kernel equals its PyTorch reference to float rounding (tests/kernels/test_kernels_train_active.py); sums run
over samples in ascending order, as `train.sddmm_sparse_gy` and `train.sddmm_sparse_both` add them.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.linear import scatter_column
from frugalnet.kernels.simd import axpy_segments


@njit(**JIT)
def by_unit(aidx, aval, counts, n, ptr, rows, vals):
    """Per-unit lists from per-sample ones (aidx, aval, counts: row b's first counts[b] entries): for unit u, the
    samples b (ascending) with u in aidx[b] and their values, as rows[ptr[u]:ptr[u + 1]], vals[...]; ptr (n + 1),
    rows / vals (sum of counts). Serial (a counting sort of about B * k entries)."""
    for u in range(n + 1):
        ptr[u] = 0
    for b in range(aidx.shape[0]):
        for t in range(counts[b]):
            ptr[aidx[b, t] + 1] += 1
    for u in range(n):
        ptr[u + 1] += ptr[u]
    fill = ptr[:-1].copy()
    for b in range(aidx.shape[0]):
        for t in range(counts[b]):
            u = aidx[b, t]
            q = fill[u]
            rows[q] = b
            vals[q] = aval[b, t]
            fill[u] = q + 1


@njit(**JIT)
def unit_sums(ptr, vals, out):
    """out[u] = the sum of unit u's list vals[ptr[u]:ptr[u + 1]] (by_unit), in order: a bias gradient from the
    per-unit lists of gy, B x k terms instead of column sums over the dense (B, n) gy."""
    for u in range(out.shape[0]):
        acc = np.float32(0.0)
        for q in range(ptr[u], ptr[u + 1]):
            acc += vals[q]
        out[u] = acc


@kernel
def sddmm_lists(ptr, idx, gptr, grows, gvals, x, out):
    """out (nnz,) = (gy^T x) at the mask (CSR ptr, idx), in CSR order, for dense x (B, in) and gy given as per-unit
    lists (by_unit): each output row adds its samples' gathered inputs, four samples per pass over the row's
    indices (sums still in ascending sample order). Parallel over output rows."""
    for o in prange(ptr.shape[0] - 1):
        lo = ptr[o]
        n = ptr[o + 1] - lo
        ri = idx[lo:lo + n]
        a = out[lo:lo + n]
        for j in range(n):
            a[j] = 0.0
        q = gptr[o]
        end = gptr[o + 1]
        while q + 4 <= end:
            v0 = gvals[q]
            v1 = gvals[q + 1]
            v2 = gvals[q + 2]
            v3 = gvals[q + 3]
            x0 = x[grows[q]]
            x1 = x[grows[q + 1]]
            x2 = x[grows[q + 2]]
            x3 = x[grows[q + 3]]
            for j in range(n):
                i = ri[j]
                a[j] = (((a[j] + v0 * x0[i]) + v1 * x1[i]) + v2 * x2[i]) + v3 * x3[i]
            q += 4
        while q < end:
            v0 = gvals[q]
            x0 = x[grows[q]]
            for j in range(n):
                a[j] += v0 * x0[ri[j]]
            q += 1


@njit(**JIT)
def _scatter_list(acc, ai, av, v, n):
    """acc[ai[t]] += v * av[t] for t < n, the ai distinct (one sample's list): four loads before four stores."""
    t = 0
    while t + 4 <= n:
        i0 = ai[t]
        i1 = ai[t + 1]
        i2 = ai[t + 2]
        i3 = ai[t + 3]
        a0 = acc[i0] + v * av[t]
        a1 = acc[i1] + v * av[t + 1]
        a2 = acc[i2] + v * av[t + 2]
        a3 = acc[i3] + v * av[t + 3]
        acc[i0] = a0
        acc[i1] = a1
        acc[i2] = a2
        acc[i3] = a3
        t += 4
    while t < n:
        acc[ai[t]] += v * av[t]
        t += 1


@kernel
def sddmm_lists_both(ptr, idx, gptr, grows, gvals, aidx, aval, counts, n_in, out, nchunks):
    """out (nnz,) = (gy^T x) at the mask, CSR order, with gy as per-unit lists (by_unit) and x as per-sample lists
    (aidx, aval, counts; every index below n_in = in_features): each output row
    scatters v * (its samples' active inputs) into a dense accumulator and gathers the mask row's entries from it.
    Rows go in `nchunks` runs with an accumulator each. Parallel over runs."""
    n_out = ptr.shape[0] - 1
    nchunks = max(1, min(n_out, nchunks))
    for c in prange(nchunks):
        acc = np.zeros(max(n_in, 1), np.float32)
        for o in range((c * n_out) // nchunks, ((c + 1) * n_out) // nchunks):
            q0 = gptr[o]
            q1 = gptr[o + 1]
            if q1 == q0:
                for j in range(ptr[o], ptr[o + 1]):
                    out[j] = 0.0
                continue
            touched = 0
            for q in range(q0, q1):
                b = grows[q]
                _scatter_list(acc, aidx[b], aval[b], gvals[q], counts[b])
                touched += counts[b]
            for j in range(ptr[o], ptr[o + 1]):
                out[j] = acc[idx[j]]
            if 8 * touched >= n_in:     # a vectorised pass over all of it beats scalar stores at the touched
                for i in range(n_in):   # (MLP 2048 x 2048, ~1,300 touched a row: 3.3 -> 2.2 ms, one thread)
                    acc[i] = 0.0
            else:
                for q in range(q0, q1):
                    b = grows[q]
                    ab = aidx[b]
                    for t in range(counts[b]):
                        acc[ab[t]] = 0.0


TILE = 16   # output rows per tile of csr_rows_tt: one 64-byte line of each sample's output row


@kernel
def csr_rows_tt(ptr, idx, val, xt, bias, out):
    """out (B, out) = x W^T + b for sparse W (CSR) and dense x held transposed, xt (in, B): each output row is
    summed for the whole batch in registers as in `linear.csr_rows_t` (a nonzero adds a scaled row of xt), into a
    per-thread tile of TILE rows x B, which is then written into out's (B, out) rows TILE floats at a time: the
    layout autograd and the next layer want, without a separate transposing copy of the (out, B) result.
    Parallel over tiles."""
    n_out = ptr.shape[0] - 1
    batch = xt.shape[1]
    xflat = xt.reshape(-1)
    ntiles = (n_out + TILE - 1) // TILE
    width = 0
    for j in range(n_out):
        width = max(width, np.int64(ptr[j + 1] - ptr[j]))
    for tile in prange(ntiles):
        r0 = tile * TILE
        nr = min(TILE, n_out - r0)
        buf = np.empty((TILE, batch), np.float32)
        offs = np.empty(max(width, 1), np.int64)
        seg = np.zeros(3, np.int32)     # one segment: entries 0..seg[1], base 0
        for rr in range(nr):
            r = r0 + rr
            lo = ptr[r]
            n = ptr[r + 1] - lo
            for j in range(n):
                offs[j] = np.int64(idx[lo + j]) * batch
            seg[1] = n
            acc = buf[rr]
            for b in range(batch):
                acc[b] = bias[r]
            axpy_segments(xflat, seg, seg[1:], seg[2:], 1, offs, val[lo:lo + n], acc, 0, batch)
        for b in range(batch):
            o = out[b]
            for rr in range(nr):
                o[r0 + rr] = buf[rr, b]


@njit(**JIT)
def _scatter_column4(o0, o1, o2, o3, idx, val, lo, hi, v0, v1, v2, v3):
    """o_s[idx[j]] += v_s * val[j] (j in lo..hi) for four samples' output rows at once: the column's index and value
    are loaded once for four read-modify-writes (ten memory operations instead of sixteen)."""
    ci = idx[lo:hi]
    cv = val[lo:hi]
    for j in range(hi - lo):
        r = ci[j]
        w = cv[j]
        o0[r] += v0 * w
        o1[r] += v1 * w
        o2[r] += v2 * w
        o3[r] += v3 * w


@njit(**JIT)
def _scatter_column2(o0, o1, idx, val, lo, hi, v0, v1):
    ci = idx[lo:hi]
    cv = val[lo:hi]
    for j in range(hi - lo):
        r = ci[j]
        w = cv[j]
        o0[r] += v0 * w
        o1[r] += v1 * w


@kernel
def csc_lists_blocked(ptr, idx, val, aidx, aval, counts, bias, out, block):
    """out (B, n_out) = x M^T + b for x given as per-sample lists (aidx, aval, counts; indices < n_in) and M by
    columns (ptr (n_in + 1), idx, val: W's CSC for the forward, W's CSR for the input gradient gy W). Samples go
    in blocks of `block`: a block's nonzero (sample, value) pairs are grouped by column (a counting sort), and
    each active column is read once and scattered into every sample of the block that uses it, four samples at
    a time (`_scatter_column4`), where a per-sample loop (linear.csc_active_rows) reads it once per sample. Zero
    values are skipped. Each output sums its terms in ascending column order, as csc_active_rows does with
    ascending lists (bitwise equal). Parallel over blocks."""
    batch = aidx.shape[0]
    n_in = ptr.shape[0] - 1
    n_out = out.shape[1]
    block = max(1, block)
    nblocks = (batch + block - 1) // block
    for blk in prange(nblocks):
        b0 = blk * block
        b1 = min(batch, b0 + block)
        cptr = np.zeros(n_in + 1, np.int32)
        for b in range(b0, b1):
            ab = aidx[b]
            av = aval[b]
            for t in range(counts[b]):
                cptr[ab[t] + 1] += np.int32(av[t] != 0)
        for i in range(n_in):
            cptr[i + 1] += cptr[i]
        fill = cptr[:-1].copy()
        total = cptr[n_in]
        rows = np.empty(max(total, 1), np.int32)
        vals = np.empty(max(total, 1), np.float32)
        for b in range(b0, b1):
            ab = aidx[b]
            av = aval[b]
            o = out[b]
            for r in range(n_out):
                o[r] = bias[r]
            for t in range(counts[b]):
                v = av[t]
                if v != 0:
                    i = ab[t]
                    q = fill[i]
                    rows[q] = b
                    vals[q] = v
                    fill[i] = q + 1
        for i in range(n_in):
            q = cptr[i]
            q1 = cptr[i + 1]
            if q == q1:
                continue
            lo = ptr[i]
            hi = ptr[i + 1]
            while q + 4 <= q1:
                _scatter_column4(out[rows[q]], out[rows[q + 1]], out[rows[q + 2]], out[rows[q + 3]], idx, val, lo,
                                 hi, vals[q], vals[q + 1], vals[q + 2], vals[q + 3])
                q += 4
            if q + 2 <= q1:
                _scatter_column2(out[rows[q]], out[rows[q + 1]], idx, val, lo, hi, vals[q], vals[q + 1])
                q += 2
            if q < q1:
                scatter_column(out[rows[q]], idx, val, lo, hi, vals[q])
