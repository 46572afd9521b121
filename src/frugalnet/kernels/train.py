"""Numba kernels for *training* sparse Linear layers: the weight gradient sampled at the mask (SDDMM) and the
layout pieces the autograd Function needs. Forward (y = x W^T) and the input gradient (gx = gy W) reuse the
inference kernels of `linear.py` (CSR rows for dense operands, CSC/active-input scatter for sparse ones).

Shapes: W is (out, in) with a fixed mask; x (B, in); gy = dL/dy (B, out). The weight gradient is needed only at the
mask's positions: gW[o, i] = sum_b gy[b, o] x[b, i] for (o, i) in the mask, zero elsewhere. Kernels write
the gradient of the mask's values in CSR order (nnz,): a compact layer (SparseLinear(compact=True)) takes it as is,
the dense parameter gets it spread out by `expand_rows` (zeros outside the mask, each row written once).

Measured (benchmarks/train_step.py, one run, the timed choice's candidates, 2-core AVX-512 machine under heavy
shared load, so only the ratios mean much): the dendritic MLP's 2048 x 2048 layer, 10% weights, 5% k-WTA inputs and
5% nonzero output gradients, batch 256: forward 36.7 ms (CSC, active inputs) against 187.7 ms dense; input gradient
47.7 ms (scatter of nonzero gy) against 216.6 ms; weight gradient 36.0 ms (sddmm_gy) against 198.1 ms. Its 784-input
first layer (dense input): weight gradient 3.2 ms (sddmm) against 129.9 ms dense.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from frugalnet.kernels._jit import kernel
from frugalnet.kernels.layouts import index_dtype, pointer_dtype
from frugalnet.kernels.simd import _VEC, f32x8, vload

# ---- vector-vector intrinsics (simd.py has vector-scalar ones; a dot product needs both operands as vectors) ----


@intrinsic
def vzero(typingctx):
    """Eight float32 zeros."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * 8)
    return f32x8(), codegen


@intrinsic
def vfma2(typingctx, a, b, acc):
    """acc + a * b lanewise (fused)."""
    def codegen(context, builder, sig, args):
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]),
                                             "llvm.fma.v8f32")
        return builder.call(fma, [args[0], args[1], args[2]])
    return f32x8(f32x8, f32x8, f32x8), codegen


@intrinsic
def vsum(typingctx, v):
    """The sum of the eight lanes, as ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))."""
    def codegen(context, builder, sig, args):
        lanes = [builder.extract_element(args[0], ir.Constant(ir.IntType(32), k)) for k in range(8)]
        p = [builder.fadd(lanes[2 * k], lanes[2 * k + 1]) for k in range(4)]
        return builder.fadd(builder.fadd(p[0], p[1]), builder.fadd(p[2], p[3]))
    return types.float32(f32x8), codegen


# ---- the weight gradient at the mask (sampled dense-dense product) ----------------------------------------------

@kernel
def sddmm_dense(ptr, idx, gyt, xt, out):
    """out (nnz,) = (gy^T x) at the mask's positions, in CSR order (the weight gradient of a compact layer's
    values; `expand_rows` spreads it into a dense gradient), for dense gy and x given transposed: gyt (out, B),
    xt (in, B), both C-contiguous. Each masked (o, i) is a dot product of two contiguous length-B rows, four
    nonzeros of a row at a time so one load of gy's row feeds four independent vector accumulators (latency of
    the fused multiply-add hidden). Parallel over output rows."""
    batch = gyt.shape[1]
    for o in prange(ptr.shape[0] - 1):
        lo = ptr[o]
        n = ptr[o + 1] - lo
        ri = idx[lo:lo + n]
        g = gyt[o]
        row = out[lo:lo + n]
        j = 0
        while j + 4 <= n:
            x0 = xt[ri[j]]
            x1 = xt[ri[j + 1]]
            x2 = xt[ri[j + 2]]
            x3 = xt[ri[j + 3]]
            a0 = vzero()
            a1 = vzero()
            a2 = vzero()
            a3 = vzero()
            k = 0
            while k + 8 <= batch:
                gv = vload(g, k)
                a0 = vfma2(gv, vload(x0, k), a0)
                a1 = vfma2(gv, vload(x1, k), a1)
                a2 = vfma2(gv, vload(x2, k), a2)
                a3 = vfma2(gv, vload(x3, k), a3)
                k += 8
            s0 = vsum(a0)
            s1 = vsum(a1)
            s2 = vsum(a2)
            s3 = vsum(a3)
            while k < batch:
                s0 += g[k] * x0[k]
                s1 += g[k] * x1[k]
                s2 += g[k] * x2[k]
                s3 += g[k] * x3[k]
                k += 1
            row[j] = s0
            row[j + 1] = s1
            row[j + 2] = s2
            row[j + 3] = s3
            j += 4
        while j < n:
            xr = xt[ri[j]]
            a0 = vzero()
            k = 0
            while k + 8 <= batch:
                a0 = vfma2(vload(g, k), vload(xr, k), a0)
                k += 8
            s0 = vsum(a0)
            while k < batch:
                s0 += g[k] * xr[k]
                k += 1
            row[j] = s0
            j += 1


@kernel
def sddmm_sparse_gy(ptr, idx, gyt, x, out):
    """out (nnz,) = (gy^T x) at the mask's positions, in CSR order, skipping the zeros of gy given transposed,
    gyt (out, B): for each output unit only the samples whose gradient reaches it (k-WTA or ReLU after the layer
    pass gradient to few units) add their gathered inputs x[b, mask row] (x (B, in) row-major) into the unit's
    contiguous slice of `out`. gy is read transposed because a column of a (B, out) array is a stride of out * 4
    bytes, which for out = 2048 puts all B loads in one cache set (measured 15.9 ms against 1.7 ms with the
    transposed copy, 2048 x 784 at 10%, batch 256, one thread). Parallel over output rows."""
    batch = gyt.shape[1]
    for o in prange(ptr.shape[0] - 1):
        lo = ptr[o]
        n = ptr[o + 1] - lo
        ri = idx[lo:lo + n]
        a = out[lo:lo + n]
        for j in range(n):
            a[j] = 0.0
        g = gyt[o]
        for b in range(batch):
            v = g[b]
            if v != 0:
                xb = x[b]
                for j in range(n):
                    a[j] += v * xb[ri[j]]


@kernel
def sddmm_sparse_both(ptr, idx, gyt, aidx, aval, counts, out, nchunks):
    """out (nnz,) = (gy^T x) at the mask's positions, CSR order, skipping the zeros of both operands: gy given
    transposed (gyt (out, B)) and x as its nonzeros per row (aidx, aval, counts: linear.nonzeros; aidx's width is
    in_features). For each output unit, each sample whose gradient reaches it scatters v * (its nonzero inputs)
    into a dense in_features accumulator (contiguous lists, no branch), and the mask row's entries are gathered
    from it: (nonzero gy) x (nonzero x per sample) scatter-adds instead of sddmm_sparse_gy's (nonzero gy) x (mask
    row length) gathered products, for k-WTA inputs (2048 x 2048 at 10%, 5% of x and of gy nonzero, batch 256,
    one thread, loaded machine: 7.9 ms against 11.9 ms; the same sums in the same order, bitwise equal). Rows go
    in `nchunks` runs, each with its own accumulator (zeroed after every row). Parallel over runs."""
    n_out = ptr.shape[0] - 1
    batch = gyt.shape[1]
    n_in = aidx.shape[1]
    nchunks = max(1, min(n_out, nchunks))
    for c in prange(nchunks):
        acc = np.zeros(n_in, np.float32)
        for o in range((c * n_out) // nchunks, ((c + 1) * n_out) // nchunks):
            g = gyt[o]
            for b in range(batch):
                v = g[b]
                if v != 0:
                    ab = aidx[b]
                    av = aval[b]
                    for t in range(counts[b]):
                        acc[ab[t]] += v * av[t]
            for j in range(ptr[o], ptr[o + 1]):
                out[j] = acc[idx[j]]
            for i in range(n_in):
                acc[i] = 0.0


@kernel
def expand_rows(ptr, idx, values, gw):
    """gw (out, in) = the CSR values (nnz,) at their positions, zero elsewhere, one row at a time (each row
    written once, in order)."""
    n_in = gw.shape[1]
    for o in prange(ptr.shape[0] - 1):
        row = gw[o]
        for i in range(n_in):
            row[i] = 0.0
        for j in range(ptr[o], ptr[o + 1]):
            row[idx[j]] = values[j]


# ---- layouts of a mask, built once per mask version ------------------------------------------------------------

@dataclass(frozen=True)
class MaskLayout:
    """The fixed index structure of one (out, in) mask: CSR (rows = output units) and CSC (columns = inputs),
    each with the flat positions in the dense weight from which its values are gathered every step.

    `csr_split` / `csc_split` are (n_major, 2) [start, end) pairs, the one-part form of `linear.row_splits` that
    `linear.csc_active_rows` takes (CSR of W is the CSC of W^T, used for the input gradient)."""

    shape: tuple[int, int]
    csr_ptr: np.ndarray
    csr_idx: np.ndarray
    csr_flat: np.ndarray   # int64 positions in W.view(-1), in CSR order
    csr_split: np.ndarray
    csc_ptr: np.ndarray
    csc_idx: np.ndarray
    csc_flat: np.ndarray   # int64 positions in W.view(-1), in CSC order
    csc_from_csr: np.ndarray   # CSC entry j is CSR entry csc_from_csr[j]
    csc_split: np.ndarray
    max_row_nnz: int

    @property
    def nnz(self) -> int:
        return int(self.csr_flat.shape[0])


def _split(ptr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([ptr[:-1], ptr[1:]], axis=1))


def mask_layout(mask: np.ndarray) -> MaskLayout:
    """CSR and CSC index structure of a 2-D bool mask (out, in)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (out, in), got shape {mask.shape}")
    n_out, n_in = mask.shape
    rows, cols = np.nonzero(mask)                 # row-major order: CSR
    pdt = pointer_dtype(len(rows))
    csr_ptr = np.zeros(n_out + 1, pdt)
    np.cumsum(np.bincount(rows, minlength=n_out), out=csr_ptr[1:])
    cols_t, rows_t = np.nonzero(mask.T)           # column-major order: CSC
    csc_ptr = np.zeros(n_in + 1, pdt)
    np.cumsum(np.bincount(cols_t, minlength=n_in), out=csc_ptr[1:])
    counts = np.diff(csr_ptr)
    csr_flat = rows.astype(np.int64) * n_in + cols
    csc_flat = rows_t.astype(np.int64) * n_in + cols_t
    return MaskLayout(
        shape=(n_out, n_in), csr_ptr=csr_ptr, csr_idx=cols.astype(index_dtype(n_in)),
        csr_flat=csr_flat, csr_split=_split(csr_ptr),
        csc_ptr=csc_ptr, csc_idx=rows_t.astype(index_dtype(n_out)), csc_flat=csc_flat,
        csc_from_csr=np.searchsorted(csr_flat, csc_flat).astype(pdt), csc_split=_split(csc_ptr),
        max_row_nnz=int(counts.max()) if len(counts) else 0)


# ---- plain-numpy conveniences (allocate outputs), used by tests and as the reference call pattern -------------

def masked_weight_grad(layout: MaskLayout, gy: np.ndarray, x: np.ndarray, skip_zero_gy: bool = False,
                       compact: bool = False) -> np.ndarray:
    """Weight gradient gy^T x at the mask: dense (out, in) with zeros elsewhere, or with `compact` the (nnz,)
    values in CSR order."""
    n_out, n_in = layout.shape
    gy = np.ascontiguousarray(gy, dtype=np.float32)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if gy.ndim != 2 or x.ndim != 2 or gy.shape != (x.shape[0], n_out) or x.shape[1] != n_in:
        raise ValueError(f"gy must be (B, {n_out}) and x (B, {n_in}) with the same B, got {gy.shape} and {x.shape}")
    vals = np.empty(layout.nnz, np.float32)
    if skip_zero_gy:
        sddmm_sparse_gy(layout.csr_ptr, layout.csr_idx, np.ascontiguousarray(gy.T), x, vals)
    else:
        sddmm_dense(layout.csr_ptr, layout.csr_idx, np.ascontiguousarray(gy.T), np.ascontiguousarray(x.T), vals)
    if compact:
        return vals
    gw = np.empty((n_out, n_in), np.float32)
    expand_rows(layout.csr_ptr, layout.csr_idx, vals, gw)
    return gw


# ---- per-step helpers: values gathered through the fixed index, zeros kept in storage --------------------------

@kernel
def gather(src, flat, out):
    """out[j] = src[flat[j]]: the weight's values at the mask in CSR order (src the flat dense weight, read in
    order), or the CSC values from the CSR ones (src the CSR values: a 1.6 MB array instead of strided reads
    of the 16 MB weight; 2048 x 2048 at 10%: 12.1 ms -> about 1 ms, one thread, loaded machine).
    Memory-bound: the serial build is used (one thread: 1.1 ms against several ms for two threads contending
    with other work)."""
    for j in prange(out.shape[0]):
        out[j] = src[flat[j]]


@kernel
def zero_outside(w, ptr, idx):
    """Set w[o, i] = 0 for every (o, i) outside the CSR mask (ptr, idx): writes only the gaps between a row's
    kept positions (sorted), so the mask itself is never read (a bool mask multiply reads the weight and the
    mask and writes the weight): 2048 x 2048 at 10%, one thread, 1.8 ms against 14.9 ms for `w.mul_(mask)` with
    two torch threads, in one interleaved run on a loaded machine. Memory-bound: the serial build is used."""
    n_in = w.shape[1]
    for o in prange(w.shape[0]):
        row = w[o]
        lo = ptr[o]
        ri = idx[lo:ptr[o + 1]]
        c = 0
        for j in range(ri.shape[0]):
            i = np.int64(ri[j])
            for t in range(c, i):
                row[t] = 0.0
            c = i + 1
        for t in range(c, n_in):
            row[t] = 0.0


@kernel
def count_nonzero(a):
    """Number of nonzero entries of a 2-D array (a sample of rows of an activation or gradient)."""
    total = 0
    for b in prange(a.shape[0]):
        row = a[b]
        c = 0
        for i in range(row.shape[0]):
            if row[i] != 0:
                c += 1
        total += c
    return total


@kernel
def column_sums(a, out):
    """out[j] = sum_b a[b, j] (a bias gradient from the output gradient (B, out)), rows added in order. Serial use:
    PyTorch's gy.sum(0) wakes its second thread for half a megabyte of work, which on the shared 2-core machine
    took 0.29 ms against 0.14 ms on one thread (256 x 2048, OMP_WAIT_POLICY=PASSIVE) and 11 ms with spinning
    OpenMP workers."""
    n = out.shape[0]
    for j in range(n):
        out[j] = 0.0
    for b in range(a.shape[0]):
        row = a[b]
        for j in prange(n):
            out[j] += row[j]
