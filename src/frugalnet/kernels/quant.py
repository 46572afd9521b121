"""Packed low-bit kernels (numba): GEMV/GEMM straight from 4-bit (and 8-bit) codes, dense or sparse, with float sums
or integer dot products; the layouts they read; the ISA report; and the scalar rounding helpers the low-bit
quantizers share (so the engine quantizes activations with exactly the operations of the simulation). Each kernel is
tested against a plain numpy/PyTorch reference (tests/kernels/test_kernels_quant.py).

Why it is fast: a batch-1 GEMV streams its weights once, so bytes read set the time. 4-bit codes are 0.5 byte per
weight against 4 for FP32; they are decoded in registers (16 at a time by one table shuffle), never into a weight
matrix in memory. Measured on 4096 x 4096, one thread, one process (AMD EPYC znver4, shared machine): FP32 values
from 4-bit codes 0.70 ms; integer dot products with 8-bit activation codes 0.25 ms (AVX2) / 0.23 ms (VNNI). Decoding
by vpermps (gemv_nib512) instead of pshufb + extension + conversion: ~2x gemv_nib, 2 threads, one interleaved run
(0.68 against 1.49 ms, loaded machine). `isa()` (the host's ISA, re-exported from quant_simd) picks the builds.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.quant_simd import isa  # noqa: F401 (the ISA report, part of this module's API)
from frugalnet.kernels.quant_simd import (byte16, idot64_avx2, idot64_vnni, isum, izero, nib_hi16, nib_hi16p, nib_lo16,
                                          nib_lo16p, vadd, vmla, vscale_add, vsum, vzero)
from frugalnet.kernels.simd import axpy_segments

f32 = np.float32


@nb.njit(inline="always", **JIT)
def _round_to_ulp(v, a, ulp, fmax, u, stochastic):
    """|v| = a rounded to a multiple of ulp (stochastically with uniform u, else to nearest even), saturated at
    fmax, with v's sign: the step both minifloat roundings end with."""
    r = f32(a / ulp)
    if stochastic:
        k = math.floor(f32(r + u))
    else:
        k = np.rint(r)
    q = f32(f32(k) * ulp)
    if q > fmax:
        q = fmax
    return f32(math.copysign(q, v))


@nb.njit(inline="always", **JIT)
def minifloat_round(v, mant, emin, fmax, u, stochastic):
    """v (float32) onto a minifloat grid with subnormals, saturating; mirrors lowbit.quantizers.minifloat."""
    a = f32(abs(v))
    # the binade read from the float32 exponent field (no libm call, so the loop vectorises); below 2^emin, and for
    # float32 subnormals (field 0, far below any emin here), the subnormal step continues
    e = max(((a.view(np.int32) >> 23) & 0xFF) - 127, emin)
    ulp = np.int32((e - mant + 127) << 23).view(np.float32)     # 2^(e - mant), exact
    return _round_to_ulp(v, a, ulp, fmax, u, stochastic)


@nb.njit(inline="always", **JIT)
def e2m1_round(v, u, stochastic):
    """minifloat_round specialised to E2M1 (same operations, the ulp found by comparisons instead of frexp/ldexp):
    ulp 0.5 below 2, 1 below 4, 2 above (anything from 8 up saturates to 6 under either ulp)."""
    a = abs(v)
    ulp = f32(0.5) if a < 2.0 else (f32(1.0) if a < 4.0 else f32(2.0))
    return _round_to_ulp(v, a, ulp, f32(6.0), u, stochastic)


@nb.njit(inline="always", **JIT)
def block_scale(am, nv, tensor_scale):
    """(scale, safe divisor) of one E2M1 block with max |x| = am: NVFP4 (nv) e4m3(am / (6 ts)) * ts, or MX
    2^(floor(log2 am) - 2) clamped to [2^-127, 2^127]."""
    if nv:
        bs = minifloat_round(f32(am / f32(f32(6.0) * tensor_scale)), 3, -6, f32(448.0), f32(0.0), False)
        scale = f32(bs * tensor_scale)
        return scale, (scale if scale > 0 else f32(1.0))
    e = math.frexp(am)[1] - 3 if am > 0 else -127
    scale = f32(math.ldexp(1.0, min(max(e, -127), 127)))
    return scale, scale


# --- packed dense kernels ----------------------------------------------------------------------------------------
def _gemv_nib_source(lo16, hi16):
    def gemv_nib(codes, lut, wscale, blk, x, bias, out):
        """out[b, o] = bias[o] + sum_g wscale[o, g] * sum_{i in block g} lut[code(o, i)] * x[b, i], from 4-bit codes.

        codes (n_out, K/2) uint8 in the "halves" layout: byte j of a row holds column j (low nibble) and column
        j + K/2 (high nibble), so both halves of x stream contiguously and 16 codes decode to 16 float lanes by one
        table lookup: pshufb on `lut`, the 16 int8 code values (gemv_nib), or vpermps on their float32 values
        (gemv_nib512, AVX-512: one instruction instead of three). blk: columns per scale block (a multiple of 16
        dividing K/2); wscale (n_out, K / blk). Each block's partial sums stay in registers and are scaled once per
        block; one horizontal sum per output. Parallel over output rows (the batch is looped inside: weights are
        decoded once per sample, so this is for small batches). Reads 0.5 byte per weight."""
        n_out, half = codes.shape
        batch = x.shape[0]
        nbh = half // blk
        for o in prange(n_out):
            row = codes[o]
            ws = wscale[o]
            for b in range(batch):
                xb = x[b]
                alo = vzero()
                ahi = vzero()
                for g in range(nbh):
                    # four independent sums: with two, each FMA waited on the previous one's latency
                    p0 = vzero()
                    p1 = vzero()
                    p2 = vzero()
                    p3 = vzero()
                    j = g * blk
                    end = j + blk
                    while j + 32 <= end:
                        p0 = vmla(lo16(row, j, lut), xb, j, p0)
                        p1 = vmla(hi16(row, j, lut), xb, j + half, p1)
                        p2 = vmla(lo16(row, j + 16, lut), xb, j + 16, p2)
                        p3 = vmla(hi16(row, j + 16, lut), xb, j + 16 + half, p3)
                        j += 32
                    if j < end:
                        p0 = vmla(lo16(row, j, lut), xb, j, p0)
                        p1 = vmla(hi16(row, j, lut), xb, j + half, p1)
                    alo = vscale_add(vadd(p0, p2), ws[g], alo)
                    ahi = vscale_add(vadd(p1, p3), ws[g + nbh], ahi)
                out[b, o] = vsum(vadd(alo, ahi)) + bias[o]
    return gemv_nib


gemv_nib = kernel(_gemv_nib_source(nib_lo16, nib_hi16))
gemv_nib512 = kernel(_gemv_nib_source(nib_lo16p, nib_hi16p))  # lut: float32 values; where quant.isa()["avx512"]


@kernel
def gemv_i8(codes, wscale, blk, x, bias, out):
    """As gemv_nib for 8-bit codes: codes (n_out, K) int8 (code -128 never occurs: see pack), blk a multiple of 16
    dividing K, wscale (n_out, K / blk). Reads 1 byte per weight."""
    n_out, k = codes.shape
    batch = x.shape[0]
    for o in prange(n_out):
        row = codes[o]
        ws = wscale[o]
        for b in range(batch):
            xb = x[b]
            acc = vzero()
            for g in range(k // blk):
                p0 = vzero()
                for j in range(g * blk, (g + 1) * blk, 16):
                    p0 = vmla(byte16(row, j), xb, j, p0)
                acc = vscale_add(p0, ws[g], acc)
            out[b, o] = vsum(acc) + bias[o]


@kernel
def gemm_nib(codes, lut, wscale, blk, xt, offs, bias, out_t):
    """Larger batches: out_t (n_out, B) = W x^T + b with x held transposed, xt (K, B), and offs[i] = i * B. Each
    weight row is decoded once (scaled) into a row buffer and applied to the whole batch with the partial sums in
    registers, 64 samples at a time (simd.axpy_segments), so the codes are read once per call whatever the batch
    and x^T's rows stream contiguously. Parallel over output rows."""
    n_out, half = codes.shape
    batch = xt.shape[1]
    nbh = half // blk
    xflat = xt.reshape(-1)
    for o in prange(n_out):
        row = codes[o]
        ws = wscale[o]
        vals = np.empty(2 * half, np.float32)
        for j in range(half):
            c = row[j]
            g = j // blk
            vals[j] = f32(lut[c & 15]) * ws[g]
            vals[j + half] = f32(lut[c >> 4]) * ws[g + nbh]
        seg = np.zeros(3, np.int32)     # one segment: entries 0..2 half, base 0
        seg[1] = 2 * half
        acc = out_t[o]
        for bb in range(batch):
            acc[bb] = bias[o]
        axpy_segments(xflat, seg, seg[1:], seg[2:], 1, offs, vals, acc, 0, batch)


# --- packed sparse kernels ---------------------------------------------------------------------------------------
@nb.njit(inline="always", **JIT)
def _code_value(codes, e, lutf, nibble):
    """The value of entry e: a 4-bit code (two per byte, entry e in byte e >> 1) through `lutf`, or an int8 code."""
    if nibble:
        return lutf[(codes[e >> 1] >> ((e & 1) << 2)) & 15]
    c = np.int32(codes[e])
    return f32(c - 256 if c > 127 else c)


@nb.njit(inline="always", **JIT)
def _pair(codes, e, lutf, nibble):
    """The values of entries e and e + 1 (e even: both 4-bit codes in one byte, one load)."""
    if nibble:
        c = codes[e >> 1]
        return lutf[c & 15], lutf[c >> 4]
    return _code_value(codes, e, lutf, False), _code_value(codes, e + 1, lutf, False)


@kernel
def csr_nib(ptr, idx, codes, lutf, nibble, wscale, shift, x, bias, out):
    """Sparse packed W (CSR: only the nonzero weights, as codes with their column indices) x dense x. Entry e's
    value is lutf[4-bit code] (nibble) or its int8 code, times wscale[row, column >> shift] (one column of wscale
    for per-tensor formats: then the scale is applied once per row). Rows hold an even number of entries, so each
    byte gives two codes with one load; four partial sums per dot product. Parallel over output rows."""
    batch = x.shape[0]
    per_block = wscale.shape[1] > 1
    for r in prange(ptr.shape[0] - 1):
        lo = ptr[r]
        hi = ptr[r + 1]
        ws = wscale[r]
        for b in range(batch):
            xb = x[b]
            a0 = f32(0.0)
            a1 = f32(0.0)
            a2 = f32(0.0)
            a3 = f32(0.0)
            e = lo
            if per_block:
                while e + 2 <= hi:
                    v0, v1 = _pair(codes, e, lutf, nibble)
                    i0 = idx[e]
                    i1 = idx[e + 1]
                    a0 += v0 * ws[i0 >> shift] * xb[i0]
                    a1 += v1 * ws[i1 >> shift] * xb[i1]
                    e += 2
                out[b, r] = (a0 + a1) + bias[r]
            else:
                while e + 4 <= hi:
                    v0, v1 = _pair(codes, e, lutf, nibble)
                    v2, v3 = _pair(codes, e + 2, lutf, nibble)
                    a0 += v0 * xb[idx[e]]
                    a1 += v1 * xb[idx[e + 1]]
                    a2 += v2 * xb[idx[e + 2]]
                    a3 += v3 * xb[idx[e + 3]]
                    e += 4
                if e < hi:
                    v0, v1 = _pair(codes, e, lutf, nibble)
                    a0 += v0 * xb[idx[e]]
                    a1 += v1 * xb[idx[e + 1]]
                out[b, r] = ((a0 + a1) + (a2 + a3)) * ws[0] + bias[r]


@nb.njit(inline="always", **JIT)
def _scatter(o, idx, codes, lutf, nibble, lo, hi, v, sg, per_block):
    """o[idx[e]] += value(e) * v (* sg[idx[e]] with block scales) for e in lo..hi, rows distinct (one column):
    four loads before four stores, as in kernels.linear.scatter_column; codes taken two per byte. A column's last
    entry may be its padding (the column's last row again, code 0), whose row is not distinct: it is always added
    on its own."""
    e = lo
    if e < hi and e & 1:           # a part may start mid-byte
        r = idx[e]
        o[r] += _code_value(codes, e, lutf, nibble) * (sg[r] if per_block else f32(1.0)) * v
        e += 1
    while e + 5 <= hi:
        v0, v1 = _pair(codes, e, lutf, nibble)
        v2, v3 = _pair(codes, e + 2, lutf, nibble)
        r0 = idx[e]
        r1 = idx[e + 1]
        r2 = idx[e + 2]
        r3 = idx[e + 3]
        if per_block:
            v0 *= sg[r0]
            v1 *= sg[r1]
            v2 *= sg[r2]
            v3 *= sg[r3]
        s0 = o[r0] + v0 * v
        s1 = o[r1] + v1 * v
        s2 = o[r2] + v2 * v
        s3 = o[r3] + v3 * v
        o[r0] = s0
        o[r1] = s1
        o[r2] = s2
        o[r3] = s3
        e += 4
    while e < hi:
        r = idx[e]
        o[r] += _code_value(codes, e, lutf, nibble) * (sg[r] if per_block else f32(1.0)) * v
        e += 1


@kernel
def csc_nib(split, idx, codes, lutf, nibble, wscale_t, shift, aidx, aval, counts, bias, out):
    """Sparse packed W (CSC, cut by kernels.linear.row_splits) x sparse input (active indices/values per sample):
    only the columns of active inputs are read, each entry adding code value x input value x its block scale to
    its output row. wscale_t is (n_blocks, n_out), transposed so that one column's block scales are contiguous
    (with (n_out, n_blocks) every entry's scale was a cache miss: 5.7 ms against 0.22 ms per-tensor, 4096 x 4096
    90/90 at batch 1). Parallel over (sample, output-row part), each part writing its own rows (no reduction)."""
    batch = aidx.shape[0]
    nparts = split.shape[1] - 1
    n_out = out.shape[1]
    per_block = wscale_t.shape[0] > 1
    for p in prange(batch * nparts):
        b = p // nparts
        part = p % nparts
        o = out[b]
        r0 = (part * n_out) // nparts
        r1 = ((part + 1) * n_out) // nparts
        for r in range(r0, r1):
            o[r] = 0.0
        for t in range(counts[b]):
            v = aval[b, t]
            if v != 0:
                i = aidx[b, t]
                _scatter(o, idx, codes, lutf, nibble, split[i, part], split[i, part + 1], v,
                         wscale_t[(i >> shift) if per_block else 0], per_block)
        if per_block:
            for r in range(r0, r1):
                o[r] += bias[r]
        else:
            for r in range(r0, r1):
                o[r] = o[r] * wscale_t[0, r] + bias[r]


# --- layouts: pure numpy, integer codes only (never FP32 weights) -------------------------------------------------
def padded_width(n: int, multiple: int = 64) -> int:
    """Row length K the dense kernels take: n rounded up to a multiple of 64 (so halves and blocks align)."""
    return max(multiple, -(-n // multiple) * multiple)


def to_halves(nib: np.ndarray, k: int) -> np.ndarray:
    """(n_out, n) 4-bit codes (uint8 0..15) -> (n_out, k / 2) bytes in the halves layout of `gemv_nib` (columns
    n..k padded with code 0, which every table maps to 0)."""
    n_out, n = nib.shape
    if n > k or k % 2:
        raise ValueError(f"cannot lay {n} columns out in {k}")
    full = np.zeros((n_out, k), np.uint8)
    full[:, :n] = nib
    return np.ascontiguousarray(full[:, :k // 2] | (full[:, k // 2:] << 4))


def from_halves(codes: np.ndarray, n: int) -> np.ndarray:
    """Inverse of to_halves: the (n_out, n) codes."""
    return np.concatenate([codes & 15, codes >> 4], axis=1)[:, :n]


def compress_codes(mat: np.ndarray, zero: np.ndarray, by_column: bool, nibble: bool):
    """(ptr, idx, codes) of the entries of a code matrix whose value is nonzero (zero[code] False), per row (CSR)
    or per column (CSC), each row/column padded to an even count with a zero code (so 4-bit codes of a row start
    on a byte). idx: uint16 below 65,536 positions, else uint32. codes: two 4-bit codes per byte, or one int8 code
    (as uint8) per entry."""
    m = mat.T if by_column else mat
    keep = ~zero[m.astype(np.int64) & (15 if nibble else 255)]
    counts = keep.sum(1)
    padded = counts + (counts % 2)
    ptr = np.zeros(m.shape[0] + 1, np.int64)
    np.cumsum(padded, out=ptr[1:])
    nnz = int(ptr[-1])
    idx_dtype = np.uint16 if m.shape[1] <= 65536 else np.uint32
    idx = np.zeros(nnz, idx_dtype)
    vals = np.zeros(nnz, np.uint8)
    rows, cols = np.nonzero(keep)
    pos = ptr[rows] + (np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts))
    idx[pos] = cols
    vals[pos] = m[rows, cols]
    # A padding entry repeats its row/column's last index (code zero adds nothing): the index order stays sorted,
    # so row_splits puts it in the same part as that entry. With index 0 it fell in part 0's rows while the last
    # part's thread read-modify-wrote out[b, 0], racing part 0's thread (a lost sum, seen under load).
    last = ptr[1:][counts % 2 == 1] - 1
    idx[last] = idx[last - 1]
    if nibble:
        vals = vals[0::2] | (vals[1::2] << 4) if nnz else vals
    ptr_dtype = np.int32 if nnz < 2**31 else np.int64
    return ptr.astype(ptr_dtype), idx, np.ascontiguousarray(vals)


def _igemv_source(idot):
    def igemv(codes, lut, rowsum, xq, offset, scale, bias, out):
        """out[b, o] = (sum_i w[o, i] xq[b, i] - offset[b] rowsum[o]) scale[b] + bias[o]: integer dot products of
        4-bit weight codes (halves layout, one scale per tensor folded into `scale`) with unsigned 8-bit activation
        codes (signed codes shifted up by offset[b]; rowsum[o] = sum of row o's weight codes undoes the shift).
        Exact in int32 (|sum| <= K * 255 * 12). Parallel over output rows."""
        n_out, half = codes.shape
        batch = xq.shape[0]
        for o in prange(n_out):
            row = codes[o]
            for b in range(batch):
                xb = xq[b]
                a0 = izero()
                a1 = izero()
                a2 = izero()
                a3 = izero()
                j = 0
                while j + 128 <= half:
                    a0 = idot(a0, row, j, xb, j, j + half, lut)
                    a1 = idot(a1, row, j + 32, xb, j + 32, j + 32 + half, lut)
                    a2 = idot(a2, row, j + 64, xb, j + 64, j + 64 + half, lut)
                    a3 = idot(a3, row, j + 96, xb, j + 96, j + 96 + half, lut)
                    j += 128
                while j < half:
                    a0 = idot(a0, row, j, xb, j, j + half, lut)
                    j += 32
                total = (isum(a0) + isum(a1)) + (isum(a2) + isum(a3)) - np.int64(offset[b]) * np.int64(rowsum[o])
                out[b, o] = f32(f32(total) * scale[b]) + bias[o]
    return igemv


igemv_avx2 = kernel(_igemv_source(idot64_avx2))
igemv_vnni = kernel(_igemv_source(idot64_vnni))    # compile only where isa()["vnni"] (LLVM cannot emit it elsewhere)
